"""OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp server, LM Studio...): SSE streaming."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
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
    MAX_LINE_BYTES,
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

WHAT = "the OpenAI-compatible server"
DEFAULT_LIST_TIMEOUT = 10.0
#: Our option names forwarded as request fields (``context_length`` has no OpenAI equivalent).
OPTION_NAMES = ("temperature", "top_p", "seed", "stop", "max_tokens", "presence_penalty", "frequency_penalty")
_BOM = b"\xef\xbb\xbf"


class SSEParser:
    """The WHATWG event-stream rules (docs/protocols.md, §E.6) over already-split lines: comments ignored,
    ``data`` lines joined with LF, dispatch on a blank line, unknown fields ignored, events capped."""

    __slots__ = ("_data", "_event", "_first", "_size")

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._size = 0
        self._event = b""
        self._first = True

    def feed(self, line: bytes) -> tuple[str, bytes] | None:
        """Take one line; return ``(event type, data)`` when it completes an event."""
        if self._first:
            self._first = False
            if line.startswith(_BOM):
                line = line[len(_BOM) :]
        if not line:
            if not self._data:
                self._event = b""
                return None
            data = b"\n".join(self._data)
            event = self._event.decode("utf-8", "replace") or "message"
            self._data, self._size, self._event = [], 0, b""
            return event, data
        if line[:1] == b":":
            return None
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._size += len(value) + 1
            if self._size > MAX_LINE_BYTES:
                raise ProviderError("upstream_protocol", "the upstream sent an event larger than 1024 KiB")
            self._data.append(value)
        elif name == b"event":
            self._event = value
        return None  # id, retry and unknown fields change nothing we use

    def finish(self) -> tuple[str, bytes] | None:
        """End of stream: an event still waiting for its blank line (lenient: servers that end on a
        single LF after ``data: [DONE]``)."""
        return self.feed(b"") if self._data else None


class OpenAICompatProvider:
    """Adapter for one OpenAI-compatible endpoint (``base_url`` ends where ``/chat/completions`` starts)."""

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        client: httpx.AsyncClient,
        *,
        api_key: str | None = None,
        owns_client: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client
        self._api_key = api_key or None
        self._owns_client = owns_client
        #: Counters for diagnostics (never content): unreadable events and unknown event types skipped.
        self.skipped_events = 0

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, "Accept-Encoding": "identity"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    @property
    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key,) if self._api_key else ()

    def build_body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [_message(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = request.tools
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        for name in OPTION_NAMES:
            value = request.options.get(name)
            if value is not None:
                body[name] = value
        if request.response_format:
            body["response_format"] = request.response_format
        return body

    async def embed(
        self, model: str, inputs: list[str], timeout: float
    ) -> tuple[list[list[float]], int | None]:
        """``POST /embeddings`` as it is: one vector per input, and the upstream's prompt token count."""
        data = await get_json(
            self._client,
            "POST",
            f"{self.base_url}/embeddings",
            json_body={"model": model, "input": inputs},
            timeout=timeout,
            headers=self._headers("application/json"),
            secrets=self._secrets,
            what=WHAT,
        )
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list) or len(entries) != len(inputs):
            raise ProviderError("upstream_protocol", f"{WHAT} sent a malformed embedding answer")
        ordered = sorted(
            (e for e in entries if isinstance(e, dict)),
            key=lambda e: e.get("index", 0) if isinstance(e.get("index"), int) else 0,
        )
        vectors = [e.get("embedding") for e in ordered]
        if any(not isinstance(v, list) for v in vectors) or len(vectors) != len(inputs):
            raise ProviderError("upstream_protocol", f"{WHAT} sent a malformed embedding answer")
        count = (
            _usage(data.get("usage") or {}).get("prompt_tokens")
            if isinstance(data.get("usage"), dict)
            else None
        )
        return vectors, count  # type: ignore[return-value]

    def _error_from_event(self, payload: Any) -> ProviderError:
        error = payload.get("error") if isinstance(payload, dict) else payload
        text = clean_message(error, secrets=self._secrets) or "the upstream reported an error"
        return ProviderError("upstream_error", text)

    async def stream_chat(
        self, request: ChatRequest, timeouts: Timeouts = Timeouts()
    ) -> AsyncGenerator[ChatEvent, None]:
        response, deadline = await open_stream(
            self._client,
            "POST",
            f"{self.base_url}/chat/completions",
            json_body=self.build_body(request),
            headers=self._headers("text/event-stream"),
            timeouts=timeouts,
        )
        reader: LineReader | None = None
        complete = False
        try:
            await raise_for_status(response, secrets=self._secrets, what=WHAT)
            if media_type(response) != "text/event-stream":
                raise ProviderError(
                    "upstream_protocol", f"{WHAT} did not answer with an event stream; is the URL right?"
                )
            reader = LineReader(response, timeouts, deadline, sse=True)
            parser = SSEParser()
            content, thinking = TextSanitizer(), TextSanitizer()
            finish_reason = ""
            usage: dict[str, int] = {}
            #: Tool calls arrive in fragments keyed by ``index``; they are sent on whole, at the end.
            pending_calls: dict[int, dict[str, Any]] = {}
            skipped = 0
            async for batch in reader:
                # One Delta per network read (the tokens that arrived together), not one per event.
                texts: list[str] = []
                thoughts: list[str] = []
                failure: ProviderError | None = None
                finished = False
                for line in batch:
                    event = parser.feed(line)
                    if event is None:
                        continue
                    kind, data = event
                    if kind == "error":
                        try:
                            payload = json.loads(data)
                        except ValueError:
                            payload = data.decode("utf-8", "replace")
                        failure = self._error_from_event(payload)
                        break
                    if kind != "message":
                        skipped += 1
                        self.skipped_events += 1
                        continue
                    if data.strip() == b"[DONE]":
                        finished = True
                        break
                    try:
                        chunk = decode_json(data)
                    except ValueError:
                        chunk = None
                    if not isinstance(chunk, dict):
                        skipped += 1
                        self.skipped_events += 1
                        if skipped > MAX_SKIPPED:
                            failure = ProviderError(
                                "upstream_protocol", f"{WHAT} sent too many unreadable events"
                            )
                            break
                        continue
                    if chunk.get("error"):
                        failure = self._error_from_event(chunk)
                        break
                    reader.got_token()
                    if isinstance(chunk.get("usage"), dict):
                        usage = _usage(chunk["usage"])
                    choices = chunk.get("choices")
                    if not isinstance(choices, list):
                        continue
                    for choice in choices:
                        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                            continue
                        delta = choice.get("delta")
                        if isinstance(delta, dict):
                            if isinstance(delta.get("tool_calls"), list):
                                _merge_tool_calls(pending_calls, delta["tool_calls"])
                            text = delta.get("content")
                            thought = delta.get("reasoning_content") or delta.get("reasoning")
                            if isinstance(text, str) and text:
                                texts.append(text)
                            if isinstance(thought, str) and thought:
                                thoughts.append(thought)
                        reason = choice.get("finish_reason")
                        if isinstance(reason, str) and reason:
                            finish_reason = clean_message(reason)[:32]
                delta = batch_delta(content, thinking, texts, thoughts)
                if delta is not None:
                    yield delta
                if failure is not None:
                    raise failure
                if finished:
                    content.flush()
                    thinking.flush()
                    if pending_calls:
                        yield Delta(tool_calls=_whole_calls(pending_calls))
                    complete = True
                    yield Done(done_reason=finish_reason or "stop", usage=usage)
                    return
            pending = parser.finish()
            if pending is not None and pending[0] == "message" and pending[1].strip() == b"[DONE]":
                if pending_calls:
                    yield Delta(tool_calls=_whole_calls(pending_calls))
                complete = True
                yield Done(done_reason=finish_reason or "stop", usage=usage)
                return
            if skipped:
                log.warning("OpenAI-compatible stream: skipped %d unreadable or unknown events", skipped)
            raise ProviderError("upstream_error", f"{WHAT} closed the stream before it finished")
        finally:
            await end_stream(response, reader, complete=complete)

    async def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        data = await get_json(
            self._client,
            "GET",
            f"{self.base_url}/models",
            timeout=timeout or DEFAULT_LIST_TIMEOUT,
            headers=self._headers("application/json"),
            secrets=self._secrets,
            what=WHAT,
        )
        entries = data.get("data") if isinstance(data, dict) else None
        if entries is not None and not isinstance(entries, list):
            raise ProviderError("upstream_protocol", f"{WHAT} sent a malformed model list")
        names = sorted(
            {
                e["id"]
                for e in entries or []
                if isinstance(e, dict) and isinstance(e.get("id"), str) and e["id"]
            },
            key=str.lower,
        )
        return [ModelInfo(name=clean_message(n)) for n in names if clean_message(n)]

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _usage(raw: dict[str, Any]) -> dict[str, int]:
    usage = {}
    for key in ("prompt_tokens", "completion_tokens"):
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            usage[key] = value
    return usage


def _message(m: ChatMessage) -> dict[str, Any]:
    """One message in OpenAI's shape: images as ``image_url`` parts, tool calls and answers as they are."""
    item: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
        parts += [{"type": "image_url", "image_url": {"url": url}} for url in m.images]
        item["content"] = parts
    if m.tool_calls:
        item["tool_calls"] = list(m.tool_calls)
    if m.tool_call_id is not None:
        item["tool_call_id"] = m.tool_call_id
    return item


def _merge_tool_calls(pending: dict[int, dict[str, Any]], fragments: list[Any]) -> None:
    for fragment in fragments:
        if not isinstance(fragment, dict):
            continue
        index = fragment.get("index", 0)
        call = pending.setdefault(
            index if isinstance(index, int) else 0, {"id": "", "name": "", "arguments": []}
        )
        if isinstance(fragment.get("id"), str) and fragment["id"]:
            call["id"] = fragment["id"]
        function = fragment.get("function")
        if isinstance(function, dict):
            if isinstance(function.get("name"), str) and function["name"]:
                call["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                call["arguments"].append(function["arguments"])


def _whole_calls(pending: dict[int, dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    return tuple(
        {
            "id": call["id"] or f"call_{index}",
            "type": "function",
            "function": {"name": call["name"], "arguments": "".join(call["arguments"])},
        }
        for index, call in sorted(pending.items())
        if call["name"]
    )
