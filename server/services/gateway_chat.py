"""``/v1/chat/completions`` and ``/v1/embeddings``: OpenAI's wire format over the same provider adapters,
network policy and timeouts as the UI chat, without storing anything as a conversation.

A :class:`Completion` runs the adapter in its own task and hands its events over a queue, so the route
can wait briefly for the first one (early upstream errors become a plain HTTP error, as on ``/api/chat``)
and so that cancelling it -- the client went away -- closes the upstream request at once.

Usage accounting hooks in at one place: the ``on_finished`` callback, called once per request with a
:class:`GatewayResult` (tokens, timings, outcome) when the request ends, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from server import aio
from server.errors import DomainError
from server.providers.base import ChatMessage, ChatRequest, Delta, Done, ProviderError, Timeouts
from server.schemas.v1 import ChatCompletionCreate, EmbeddingCreate
from server.services import gateway
from server.services import limits as limits_service
from server.services.models import ProviderSnapshot, ResolvedModel
from server.services.usage import Outcome, UsageEvent, recorder

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger(__name__)

#: The roles /v1 accepts in ``messages`` ("developer" is OpenAI's newer name for "system").
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
MAX_EMBED_INPUTS = 2048


class V1Error(DomainError):
    """A /v1 request error that names the request field at fault (OpenAI's ``param``)."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_request", param: str | None):
        super().__init__(message, code=code, detail={"param": param})
        self.status = status


@dataclass
class GatewayResult:
    """What one /v1 request did, for usage accounting (``on_finished``)."""

    kind: str  # "chat" or "embedding"
    user_id: uuid.UUID
    key_id: uuid.UUID | None
    model: str  # the /v1 id
    provider_id: uuid.UUID | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: True when the upstream gave no counts and the figures above are estimates (4 characters a token
    #: of the characters below).
    estimated: bool = False
    prompt_chars: int = 0
    completion_chars: int = 0
    duration_ms: float = 0.0
    first_token_ms: float | None = None
    #: "complete", "stopped" (client went away) or an error code.
    outcome: str = "complete"
    client: str | None = None


OnFinished = Callable[[GatewayResult], None]


def usage_event(result: GatewayResult) -> UsageEvent:
    """The usage record of a finished /v1 request: estimated counts go as None with their characters,
    an error code as the ``error`` outcome with that code."""
    outcome: Outcome = "complete" if result.outcome == "complete" else "stopped"
    error_code = None
    if result.outcome not in ("complete", "stopped"):
        outcome, error_code = "error", result.outcome
    return UsageEvent(
        user_id=result.user_id,
        key_id=result.key_id,
        model=result.model,
        provider_id=result.provider_id,
        outcome=outcome,
        error_code=error_code,
        prompt_tokens=None if result.estimated else result.prompt_tokens,
        completion_tokens=None if result.estimated else result.completion_tokens,
        prompt_chars=result.prompt_chars,
        completion_chars=result.completion_chars,
        duration_ms=result.duration_ms,
        ttft_ms=result.first_token_ms,
        client_ip=result.client,
    )


def record_usage(runtime: Runtime) -> OnFinished:
    """The ``on_finished`` callback that books each /v1 request with usage accounting."""
    usage = recorder(runtime)
    return lambda result: usage.record(usage_event(result))


@dataclass(frozen=True)
class Caller:
    user_id: uuid.UUID
    key_id: uuid.UUID | None
    allowed: gateway.ModelFilter
    client: str | None = None
    #: The user's role now (the limits' role defaults).
    role: str = "user"
    #: OpenAI's x-ratelimit-* headers for the answer, filled at admission.
    headers: dict[str, str] = field(default_factory=dict)
    #: The catalog generation read with the API key (server/db/catalog_generation.py).
    catalog_generation: str | None = None


# --- request -> ChatRequest ---------------------------------------------------------------------------


def _content(content: str | list[dict[str, Any]] | None, index: int) -> tuple[str, tuple[str, ...]]:
    """A message's text (text parts joined) and its image URLs."""
    if content is None or isinstance(content, str):
        return content or "", ()
    parts: list[str] = []
    images: list[str] = []
    for part in content:
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url.startswith(("data:image/", "https://", "http://")):
                raise V1Error(
                    "image_url.url must be a data: or http(s) URL", param=f"messages.[{index}].content"
                )
            images.append(url)
        else:
            raise V1Error(
                f"unsupported content part type: {str(kind)[:40]}", param=f"messages.[{index}].content"
            )
    return "".join(parts), tuple(images)


def _tools(body: ChatCompletionCreate) -> list[dict[str, Any]] | None:
    if not body.tools:
        return None
    for tool in body.tools:
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
            raise V1Error("each tool must be {type: function, function: {name, ...}}", param="tools")
    return body.tools


def build_request(body: ChatCompletionCreate, resolved: ResolvedModel) -> ChatRequest:
    """The request in our vocabulary; the preset's system prompt and options apply under the request's."""
    messages: list[ChatMessage] = []
    for index, message in enumerate(body.messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise V1Error(f"unsupported message role: {message.role[:32]}", param=f"messages.[{index}].role")
        text, images = _content(message.content, index)
        if images and role != "user":
            raise V1Error("only user messages can carry images", param=f"messages.[{index}].content")
        if role == "tool" and not message.tool_call_id:
            raise V1Error("a tool message needs tool_call_id", param=f"messages.[{index}].tool_call_id")
        calls = tuple(message.tool_calls or ()) if role == "assistant" else ()
        messages.append(
            ChatMessage(
                role=role,  # type: ignore[arg-type]
                content=text,
                images=images,
                tool_calls=calls,
                tool_call_id=message.tool_call_id if role == "tool" else None,
            )
        )
    defaults = resolved.defaults or {}
    system = defaults.get("system_prompt") or ""
    if system and not any(m.role == "system" for m in messages):
        messages.insert(0, ChatMessage(role="system", content=system))
    options = {k: v for k, v in (defaults.get("options") or {}).items() if v is not None}
    stop = body.stop
    if isinstance(stop, list) and len(stop) > 4:
        raise V1Error("at most 4 stop sequences", param="stop")
    requested = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_tokens": body.max_completion_tokens or body.max_tokens,
        "stop": stop,
        "seed": body.seed,
    }
    options.update({k: v for k, v in requested.items() if v is not None})
    think = options.pop("think", None)
    response_format = body.response_format
    if response_format is not None:
        kind = response_format.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise V1Error(
                "response_format.type must be text, json_object or json_schema", param="response_format"
            )
        if kind == "json_schema" and not isinstance(
            (response_format.get("json_schema") or {}).get("schema"), dict
        ):
            raise V1Error("response_format.json_schema.schema must be an object", param="response_format")
        if kind == "text":
            response_format = None
    return ChatRequest(
        model=resolved.upstream_model,
        messages=messages,
        options=options,
        think=think if isinstance(think, bool) else None,
        response_format=response_format,
        tools=_tools(body),
        tool_choice=body.tool_choice,
    )


async def _resolve(runtime: Runtime, caller: Caller, model_id: str) -> tuple[ResolvedModel, ProviderSnapshot]:
    if not caller.allowed(model_id):
        raise gateway.not_found(model_id)
    return await gateway.resolve_cached(runtime, caller.user_id, model_id, caller.catalog_generation)


async def _check_images(runtime: Runtime, provider: ProviderSnapshot, request: ChatRequest) -> None:
    """Images only for a model with the vision capability, and as data: URLs for Ollama."""
    index = next((i for i, m in enumerate(request.messages) if m.images), None)
    if index is None:
        return
    param = "messages"
    if provider.kind == "ollama":
        if any(not url.startswith("data:") for m in request.messages for url in m.images):
            raise V1Error("this model takes images as data: URLs only", param=param)
        caps = await gateway.capabilities(runtime, provider, request.model)
        if caps is not None and "vision" not in caps:
            raise V1Error("this model does not accept images (no vision capability)", param=param)


# --- the running completion ---------------------------------------------------------------------------

_END = object()


class Completion:
    """One chat completion: the adapter runs in ``task``; events come out of :meth:`next`."""

    def __init__(
        self,
        runtime: Runtime,
        caller: Caller,
        model_id: str,
        resolved: ResolvedModel,
        request: ChatRequest,
        on_finished: OnFinished | None,
        admission: limits_service.Admission | None = None,
    ) -> None:
        s = runtime.settings
        self.admission = admission
        self.runtime = runtime
        self.caller = caller
        self.model_id = model_id
        self.resolved = resolved
        self.request = request
        self.on_finished = on_finished
        self.timeouts = Timeouts(
            connect=s.chat_connect_timeout, first_token=s.chat_first_token_timeout, idle=s.chat_idle_timeout
        )
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.started = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.result = GatewayResult(
            kind="chat",
            user_id=caller.user_id,
            key_id=caller.key_id,
            model=model_id,
            provider_id=getattr(resolved.provider, "id", None),
            client=caller.client,
        )
        self._text_chars = 0
        #: The upstream failed before any event: the error, for an HTTP error answer.
        self.early_error: ProviderError | None = None
        self.result.prompt_chars = sum(len(m.content) for m in request.messages)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def cancel(self) -> None:
        """Stop at once (idempotent, synchronous: usable from a disconnect callback)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        result = self.result
        try:
            async with aclosing(self.resolved.adapter.stream_chat(self.request, self.timeouts)) as events:
                async for event in events:
                    if result.first_token_ms is None and isinstance(event, Delta):
                        result.first_token_ms = round((loop.time() - begin) * 1000, 1)
                    if isinstance(event, Delta):
                        self._text_chars += len(event.content) + len(event.thinking)
                    self.queue.put_nowait(event)
                    self.started.set()
                    if isinstance(event, Done):
                        self._count(event)
                        break
                else:
                    raise ProviderError("upstream_protocol", "the model's answer ended without a final chunk")
        except asyncio.CancelledError:
            result.outcome = "stopped"
        except ProviderError as exc:
            result.outcome = exc.code
            if self.queue.empty():
                self.early_error = exc  # nothing sent yet: the route may still answer with an HTTP error
            self.queue.put_nowait(exc)
        except Exception:  # a bug in an adapter must not hang the client
            log.exception("/v1 chat completion failed")
            result.outcome = "internal_error"
            self.queue.put_nowait(
                ProviderError("internal_error", "the completion failed; see the server log")
            )
        finally:
            self.started.set()
            result.duration_ms = round((loop.time() - begin) * 1000, 1)
            result.completion_chars = self._text_chars
            if self.on_finished is not None:
                try:
                    self.on_finished(result)
                except Exception:
                    log.exception("on_finished failed")
            try:  # settled before the end reaches the client: its next request sees the budget back
                if self.admission is not None:
                    await limits_service.settle_soon(self.runtime, self.admission, self._real_tokens())
            finally:
                self.queue.put_nowait(_END)

    def _real_tokens(self) -> int:
        """The tokens to settle the limits with: the counts of the answer (estimated where the upstream
        gave none); nothing when the upstream produced nothing."""
        r = self.result
        if r.prompt_tokens or r.completion_tokens:
            return r.prompt_tokens + r.completion_tokens
        if not self._text_chars:
            return 0
        return max(1, r.prompt_chars // 4) + (self._text_chars + 3) // 4

    def _count(self, done: Done) -> None:
        result = self.result
        prompt, completion = done.usage.get("prompt_tokens"), done.usage.get("completion_tokens")
        if prompt is None or completion is None:
            result.estimated = True
        prompt_chars = result.prompt_chars
        result.prompt_tokens = prompt if prompt is not None else max(1, prompt_chars // 4)
        result.completion_tokens = completion if completion is not None else (self._text_chars + 3) // 4

    async def next(self, timeout: float | None = None) -> Delta | Done | None:
        """The next event; None at the end; ProviderError raised; TimeoutError after ``timeout``."""
        if timeout is None:
            item = await self.queue.get()
        else:
            async with aio.timeout(timeout):
                item = await self.queue.get()
        if item is _END:
            self.queue.put_nowait(_END)
            return None
        if isinstance(item, ProviderError):
            raise item
        return item

    def usage(self) -> dict[str, int]:
        r = self.result
        return {
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens,
        }


def provider_error(exc: ProviderError) -> DomainError:
    """An upstream failure as an HTTP error: 404 model_not_found, 429, 504 timeouts, 502 otherwise."""
    headers = {"Retry-After": str(max(1, int(exc.retry_after)))} if exc.retry_after else None
    err = DomainError(exc.message, code=exc.code, headers=headers)
    status = exc.status if 400 <= exc.status < 600 else 502
    if exc.code == "upstream_timeout":
        status = 504
    elif status not in (404, 429, 502, 503, 504):
        status = 502
    err.status = status
    return err


async def start_completion(
    runtime: Runtime, caller: Caller, body: ChatCompletionCreate, on_finished: OnFinished | None = None
) -> Completion:
    """Resolve, check, start; wait up to ``chat_preflight_timeout`` for the first event so that errors the
    upstream reports at once (unknown model, busy, rate limit) become an HTTP error."""
    resolved, provider = await _resolve(runtime, caller, body.model)
    request = build_request(body, resolved)
    await _check_images(runtime, provider, request)
    settings = runtime.settings
    tokens = limits_service.estimate_tokens(
        sum(len(m.content) for m in request.messages), request.options.get("max_tokens"), settings
    )
    admission = await anyio.to_thread.run_sync(
        lambda: limits_service.admit_now(
            runtime,
            user_id=caller.user_id,
            role=caller.role,
            key_id=caller.key_id,
            tokens=tokens,
            stream=True,
            door="v1",
        )
    )
    caller.headers.update(admission.headers)
    completion = Completion(runtime, caller, body.model, resolved, request, on_finished, admission)
    completion.start()
    try:
        if settings.chat_preflight_timeout > 0:
            try:
                async with aio.timeout(settings.chat_preflight_timeout):
                    await completion.started.wait()
            except aio.TIMEOUT_ERRORS:
                pass
    except BaseException:
        completion.cancel()
        raise
    if completion.early_error is not None:
        raise provider_error(completion.early_error)
    return completion


def _finish_reason(done: Done) -> str:
    return "length" if done.done_reason == "length" else "stop"


async def collect(completion: Completion) -> dict[str, Any]:
    """The whole answer as one ``chat.completion`` object."""
    content: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    reason = "stop"
    try:
        while True:
            event = await completion.next()
            if event is None:
                break
            if isinstance(event, Delta):
                content.append(event.content)
                thinking.append(event.thinking)
                calls.extend(event.tool_calls)
            else:
                reason = _finish_reason(event)
    except ProviderError as exc:
        raise provider_error(exc) from None
    text = "".join(content)
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if any(thinking):
        message["reasoning_content"] = "".join(thinking)
    if calls:
        message["tool_calls"] = calls
        reason = "tool_calls"
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": completion.created,
        "model": completion.model_id,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
        "usage": completion.usage(),
    }


def _chunk(
    completion: Completion, delta: dict[str, Any], reason: str | None, with_usage: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model_id,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
    }
    if with_usage:
        out["usage"] = None
    return out


def error_object(code: str, message: str, status: int) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "api_error"
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


async def chunks(
    completion: Completion, include_usage: bool, ping_interval: float
) -> AsyncIterator[dict[str, Any] | None]:
    """The ``chat.completion.chunk`` objects of a streamed answer (None: send a keep-alive comment).
    Ends after the final chunk (and the usage chunk when asked); an upstream failure midway becomes a
    last ``{"error": ...}`` object. Closing it early cancels the upstream."""
    called = 0
    try:
        yield _chunk(completion, {"role": "assistant", "content": ""}, None, include_usage)
        while True:
            try:
                event = await completion.next(ping_interval)
            except aio.TIMEOUT_ERRORS:
                yield None
                continue
            except ProviderError as exc:
                err = provider_error(exc)
                yield error_object(err.code, err.message, err.status)
                return
            if event is None:
                return
            if isinstance(event, Delta):
                delta: dict[str, Any] = {}
                if event.content:
                    delta["content"] = event.content
                if event.thinking:
                    delta["reasoning_content"] = event.thinking
                if event.tool_calls:
                    delta["tool_calls"] = [
                        {"index": called + i, **call} for i, call in enumerate(event.tool_calls)
                    ]
                    called += len(event.tool_calls)
                if delta:
                    yield _chunk(completion, delta, None, include_usage)
            else:
                reason = "tool_calls" if called else _finish_reason(event)
                yield _chunk(completion, {}, reason, include_usage)
                if include_usage:
                    final = _chunk(completion, {}, None, True)
                    final["choices"] = []
                    final["usage"] = completion.usage()
                    yield final
    finally:
        completion.cancel()


# --- embeddings ---------------------------------------------------------------------------------------


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


async def embeddings(
    runtime: Runtime, caller: Caller, body: EmbeddingCreate, on_finished: OnFinished | None = None
) -> dict[str, Any]:
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    if len(inputs) > MAX_EMBED_INPUTS:
        raise V1Error(f"at most {MAX_EMBED_INPUTS} inputs", param="input")
    if any(not text for text in inputs):
        raise V1Error("an input is empty", param="input")
    if body.encoding_format not in (None, "float", "base64"):
        raise V1Error("encoding_format must be float or base64", param="encoding_format")
    resolved, _ = await _resolve(runtime, caller, body.model)
    embed = getattr(resolved.adapter, "embed", None)
    if embed is None:
        raise V1Error("this model's provider cannot compute embeddings", param="model")
    estimate = sum(max(1, len(t) // 4) for t in inputs)
    admission = await anyio.to_thread.run_sync(
        lambda: limits_service.admit_now(
            runtime,
            user_id=caller.user_id,
            role=caller.role,
            key_id=caller.key_id,
            tokens=estimate,
            stream=False,
            door="v1",
        )
    )
    caller.headers.update(admission.headers)
    result = GatewayResult(
        kind="embedding",
        user_id=caller.user_id,
        key_id=caller.key_id,
        model=body.model,
        provider_id=getattr(resolved.provider, "id", None),
        client=caller.client,
    )
    began = time.monotonic()
    try:
        vectors, tokens = await embed(
            resolved.upstream_model, inputs, runtime.settings.chat_first_token_timeout
        )
    except ProviderError as exc:
        result.outcome = exc.code
        raise provider_error(exc) from None
    except asyncio.CancelledError:
        result.outcome = "stopped"
        raise
    finally:
        result.duration_ms = round((time.monotonic() - began) * 1000, 1)
        if result.outcome != "complete":
            if on_finished is not None:
                on_finished(result)
            await limits_service.settle_soon(runtime, admission, 0)
    result.estimated = tokens is None
    result.prompt_chars = sum(len(t) for t in inputs)
    result.prompt_tokens = tokens if tokens is not None else sum(max(1, len(t) // 4) for t in inputs)
    await limits_service.settle_soon(runtime, admission, result.prompt_tokens)
    if on_finished is not None:
        on_finished(result)
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": _base64(vector) if body.encoding_format == "base64" else vector,
        }
        for index, vector in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
