"""Ollama's native API: ``POST /api/chat`` streamed as NDJSON, ``/api/tags`` + ``/api/show`` for models."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncGenerator, MutableMapping
from typing import Any

import httpx

from server.providers.base import (
    ChatEvent,
    ChatMessage,
    ChatRequest,
    Delta,
    Done,
    ModelInfo,
    ProviderError,
    Timeouts,
)
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


def ollama_format(response_format: dict[str, Any] | None) -> Any:
    """OpenAI's ``response_format`` as Ollama's ``format``: ``"json"`` for JSON mode, the schema itself for
    ``json_schema``, None for text."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else "json"
    return None


def _data_url_base64(url: str) -> str:
    """The base64 payload of a ``data:...;base64,`` URL (Ollama takes images as bare base64)."""
    head, sep, data = url.partition(",")
    if not (sep and head.startswith("data:") and head.endswith(";base64")):
        raise ProviderError("upstream_bad_request", "Ollama takes images as data: URLs only", status=400)
    return data


def ollama_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Our messages in Ollama's shape: images as base64, tool-call arguments as JSON objects, and a tool
    answer named after the call it answers."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.images:
            item["images"] = [_data_url_base64(url) for url in m.images]
        if m.tool_calls:
            calls = []
            for call in m.tool_calls:
                function = call.get("function") or {}
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments) if arguments.strip() else {}
                    except ValueError:
                        arguments = {}
                name = str(function.get("name", ""))
                if isinstance(call.get("id"), str):
                    names[call["id"]] = name
                calls.append({"function": {"name": name, "arguments": arguments or {}}})
            item["tool_calls"] = calls
        if m.role == "tool" and m.tool_call_id and m.tool_call_id in names:
            item["tool_name"] = names[m.tool_call_id]
        out.append(item)
    return out


def openai_tool_calls(raw: Any) -> tuple[dict[str, Any], ...]:
    """Ollama's whole tool calls (``arguments`` a JSON object) in OpenAI's shape (``arguments`` JSON text,
    an ``id`` made up when Ollama gives none)."""
    calls: list[dict[str, Any]] = []
    for call in raw if isinstance(raw, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) else json.dumps(arguments or {}, ensure_ascii=False)
        call_id = call.get("id") if isinstance(call.get("id"), str) else f"call_{uuid.uuid4().hex[:24]}"
        calls.append(
            {"id": call_id, "type": "function", "function": {"name": function["name"], "arguments": text}}
        )
    return tuple(calls)


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
            "messages": ollama_messages(request.messages),
            "stream": True,
        }
        if request.tools and request.tool_choice != "none":
            body["tools"] = request.tools
        options = map_options(request.options)
        if options:
            body["options"] = options
        for keep_alive in (request.options.get("keep_alive"), self._keep_alive):
            if keep_alive is not None and valid_keep_alive(keep_alive):
                body["keep_alive"] = keep_alive
                break
        if request.think is not None:
            body["think"] = request.think
        fmt = ollama_format(request.response_format)
        if fmt is not None:
            body["format"] = fmt
        return body

    async def embed(
        self, model: str, inputs: list[str], timeout: float
    ) -> tuple[list[list[float]], int | None]:
        """``POST /api/embed``: one vector per input, and the prompt token count when Ollama gives it."""
        data = await get_json(
            self._client,
            "POST",
            self._url("/api/embed"),
            json_body={"model": model, "input": inputs},
            timeout=timeout,
            what=WHAT,
        )
        vectors = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(vectors, list) or len(vectors) != len(inputs):
            raise ProviderError("upstream_protocol", "Ollama sent a malformed embedding answer")
        count = data.get("prompt_eval_count")
        tokens = count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None
        return vectors, tokens

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
                calls: list[dict[str, Any]] = []
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
                        if message.get("tool_calls"):
                            calls.extend(openai_tool_calls(message["tool_calls"]))
                    if line.get("done") is True:
                        final = done_event(line)
                        break
                delta = batch_delta(content, thinking, texts, thoughts)
                if delta is not None:
                    yield delta
                if calls:
                    yield Delta(tool_calls=tuple(calls))
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
