"""Ollama's native API: ``POST /api/chat`` streamed as NDJSON, ``/api/tags`` + ``/api/show`` for models."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, MutableMapping
from typing import Any

import httpx

from server.providers.base import ChatEvent, ChatRequest, Done, ModelInfo, ProviderError, Timeouts
from server.providers.streaming import (
    MAX_SKIPPED,
    LineReader,
    TextSanitizer,
    batch_delta,
    clean_message,
    decode_json,
    end_stream,
    get_json,
    media_type,
    open_stream,
    raise_for_status,
)

log = logging.getLogger(__name__)

WHAT = "Ollama"
DEFAULT_LIST_TIMEOUT = 5.0
#: Our option names -> Ollama's ``options`` keys. Anything else is not forwarded.
OPTION_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "seed": "seed",
    "stop": "stop",
    "max_tokens": "num_predict",
    "context_length": "num_ctx",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
_DURATION = re.compile(r"^-?\d+(\.\d+)?(ns|us|µs|ms|s|m|h)$")
_STREAM_TYPES = ("application/x-ndjson", "application/ndjson", "application/json")


def map_options(options: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ours, theirs in OPTION_NAMES.items():
        value = options.get(ours)
        if value is None:
            continue
        if ours == "stop" and isinstance(value, str):
            value = [value]
        out[theirs] = value
    return out


def valid_keep_alive(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and bool(_DURATION.match(value))


def _ms(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return round(value / 1e6, 3)
    return None


def done_event(line: dict[str, Any]) -> Done:
    usage: dict[str, int] = {}
    for ours, theirs in (("prompt_tokens", "prompt_eval_count"), ("completion_tokens", "eval_count")):
        value = line.get(theirs)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            usage[ours] = value
    timings: dict[str, float] = {}
    for ours, theirs in (
        ("load_ms", "load_duration"),
        ("prompt_ms", "prompt_eval_duration"),
        ("generate_ms", "eval_duration"),
        ("total_ms", "total_duration"),
    ):
        value = _ms(line.get(theirs))
        if value is not None:
            timings[ours] = value
    reason = line.get("done_reason")
    reason = clean_message(reason)[:32] if isinstance(reason, str) and reason else "stop"
    return Done(done_reason=reason, usage=usage, timings=timings)


class OllamaProvider:
    """Adapter for one Ollama server. Shares the app's HTTP client; holds no connection of its own."""

    kind = "ollama"

    def __init__(
        self,
        base_url: str,
        client: httpx.AsyncClient,
        *,
        keep_alive: str | int | float | None = None,
        capability_cache: MutableMapping[tuple[str, str], tuple[str, ...]] | None = None,
        owns_client: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client
        self._keep_alive = keep_alive
        self._capabilities = capability_cache if capability_cache is not None else {}
        self._owns_client = owns_client

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def build_body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
        }
        options = map_options(request.options)
        if options:
            body["options"] = options
        for keep_alive in (request.options.get("keep_alive"), self._keep_alive):
            if keep_alive is not None and valid_keep_alive(keep_alive):
                body["keep_alive"] = keep_alive
                break
        if request.think is not None:
            body["think"] = request.think
        return body

    async def stream_chat(
        self, request: ChatRequest, timeouts: Timeouts = Timeouts()
    ) -> AsyncGenerator[ChatEvent, None]:
        response, deadline = await open_stream(
            self._client,
            "POST",
            self._url("/api/chat"),
            json_body=self.build_body(request),
            headers={"Accept": "application/x-ndjson", "Accept-Encoding": "identity"},
            timeouts=timeouts,
        )
        reader: LineReader | None = None
        complete = False
        try:
            await raise_for_status(response, what=WHAT)
            if media_type(response) not in _STREAM_TYPES:
                raise ProviderError(
                    "upstream_protocol", "Ollama answered with an unexpected content type", status=502
                )
            reader = LineReader(response, timeouts, deadline, sse=False)
            content, thinking = TextSanitizer(), TextSanitizer()
            skipped = 0
            async for batch in reader:
                # One Delta per network read (the tokens that arrived together), not one per line.
                texts: list[str] = []
                thoughts: list[str] = []
                failure: ProviderError | None = None
                final: Done | None = None
                for raw in batch:
                    try:
                        line = decode_json(raw)
                    except ValueError:
                        if not raw.strip():
                            continue
                        line = None
                    if not isinstance(line, dict):
                        skipped += 1
                        if skipped > MAX_SKIPPED:
                            failure = ProviderError(
                                "upstream_protocol", "Ollama sent too many unreadable lines"
                            )
                            break
                        continue
                    error = line.get("error")
                    if error:  # checked before anything else in the line (docs/protocols.md, §A.6)
                        failure = ProviderError(
                            "upstream_error", clean_message(error) or "Ollama reported an error"
                        )
                        break
                    reader.got_token()
                    message = line.get("message")
                    if isinstance(message, dict):
                        text = message.get("content")
                        thought = message.get("thinking")
                        if isinstance(text, str) and text:
                            texts.append(text)
                        if isinstance(thought, str) and thought:
                            thoughts.append(thought)
                    if line.get("done") is True:
                        final = done_event(line)
                        break
                delta = batch_delta(content, thinking, texts, thoughts)
                if delta is not None:
                    yield delta
                if failure is not None:
                    raise failure
                if final is not None:
                    complete = True
                    yield final
                    return
            if skipped:
                log.warning("Ollama stream: skipped %d unreadable lines", skipped)
            raise ProviderError("upstream_error", "the Ollama stream ended before the answer was complete")
        finally:
            await end_stream(response, reader, complete=complete)

    async def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        timeout = timeout or DEFAULT_LIST_TIMEOUT
        data = await get_json(self._client, "GET", self._url("/api/tags"), timeout=timeout, what=WHAT)
        entries = data.get("models") if isinstance(data, dict) else None
        if entries is not None and not isinstance(entries, list):
            raise ProviderError("upstream_protocol", "Ollama sent a malformed model list")
        found: list[tuple[str, str, tuple[str, ...] | None, dict[str, Any]]] = []
        for entry in entries or []:
            if not isinstance(entry, dict):
                continue
            name = entry.get("name") or entry.get("model")
            if not isinstance(name, str) or not name or len(name) > 600:
                continue
            caps = entry.get("capabilities")
            caps_t = tuple(c for c in caps if isinstance(c, str)) if isinstance(caps, list) else None
            raw_details, raw_digest = entry.get("details"), entry.get("digest")
            details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
            digest = raw_digest if isinstance(raw_digest, str) else ""
            found.append((name, digest, caps_t, details))
        missing = [(n, d) for n, d, c, _ in found if c is None and (n, d) not in self._capabilities]
        if missing:
            semaphore = asyncio.Semaphore(4)

            async def show(name: str, digest: str) -> None:
                async with semaphore:
                    self._capabilities[(name, digest)] = await self._show_capabilities(name, timeout)

            await asyncio.gather(*(show(n, d) for n, d in missing))
        models = []
        for name, digest, caps, details in found:
            caps = caps if caps is not None else self._capabilities.get((name, digest), ("completion",))
            models.append(
                ModelInfo(name=name, capabilities=caps or ("completion",), details=_safe_details(details))
            )
        models.sort(key=lambda m: m.name.lower())
        return models

    async def _show_capabilities(self, name: str, timeout: float) -> tuple[str, ...]:
        """Capabilities from ``/api/show`` (older servers have none: assume plain completion)."""
        try:
            data = await get_json(
                self._client,
                "POST",
                self._url("/api/show"),
                json_body={"model": name},
                timeout=timeout,
                what=WHAT,
            )
        except ProviderError:
            return ("completion",)
        caps = data.get("capabilities") if isinstance(data, dict) else None
        if isinstance(caps, list) and caps:
            return tuple(c for c in caps if isinstance(c, str))
        return ("completion",)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _safe_details(details: dict[str, Any]) -> dict[str, Any]:
    keep = ("family", "parameter_size", "quantization_level", "format", "context_length")
    return {
        k: details[k]
        for k in keep
        if isinstance(details.get(k), (str, int)) and not isinstance(details.get(k), bool)
    }
