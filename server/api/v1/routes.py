"""``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``, ``POST /v1/embeddings``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from server.api.sse import EventStreamResponse, LastChunk
from server.api.v1_auth import V1Principal
from server.deps import ClientIP, RuntimeDep
from server.errors import DomainError
from server.runtime import Runtime
from server.schemas.v1 import ChatCompletionCreate, EmbeddingCreate
from server.services import gateway, gateway_chat
from server.services.api_keys import KeyPrincipal, model_allowed

router = APIRouter(prefix="/v1", tags=["v1"])


def usage_recorder(runtime: Runtime) -> gateway_chat.OnFinished | None:
    """Usage accounting's single call site: every /v1 chat and embedding request reports its
    :class:`~server.services.gateway_chat.GatewayResult` to this callback once it ends, whatever the
    outcome."""
    return gateway_chat.record_usage(runtime)


_DONE = LastChunk(b"data: [DONE]\n\n")
_PING = b": ping\n\n"


def _caller(principal: KeyPrincipal, ip: str) -> gateway_chat.Caller:
    return gateway_chat.Caller(
        user_id=principal.user_id,
        key_id=principal.key_id,
        allowed=lambda model_id: model_allowed(principal, model_id),
        client=ip or None,
        catalog_generation=principal.catalog_generation,
        role=principal.role,
    )


@asynccontextmanager
async def _ratelimit_headers(caller: gateway_chat.Caller) -> AsyncIterator[None]:
    """An error answer after admission carries the x-ratelimit-* headers too."""
    try:
        yield
    except DomainError as exc:
        for name, value in caller.headers.items():
            exc.headers.setdefault(name, value)
        raise


@router.get("/models", summary="The models this API key may use (OpenAI list format)")
async def list_models(principal: V1Principal, runtime: RuntimeDep) -> dict[str, Any]:
    allowed = _caller(principal, "").allowed
    return {"object": "list", "data": await gateway.list_models(runtime, principal.user_id, allowed)}


@router.get("/models/{model_id:path}", summary="One model (OpenAI model object)")
async def get_model(model_id: str, principal: V1Principal, runtime: RuntimeDep) -> dict[str, Any]:
    allowed = _caller(principal, "").allowed
    return await gateway.get_model(runtime, principal.user_id, allowed, model_id)


async def _sse(chunks: AsyncIterator[dict[str, Any] | None]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if chunk is None:
            yield _PING
            continue
        yield b"data: " + json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
        if "error" in chunk:
            yield LastChunk(b"")
            return
    yield _DONE


@router.post("/chat/completions", summary="A chat completion, streamed (SSE) or not")
async def chat_completions(
    body: ChatCompletionCreate, request: Request, principal: V1Principal, runtime: RuntimeDep, ip: ClientIP
) -> Any:
    caller = _caller(principal, ip)
    async with _ratelimit_headers(caller):
        completion = await gateway_chat.start_completion(runtime, caller, body, usage_recorder(runtime))
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = gateway_chat.chunks(completion, include_usage, runtime.settings.chat_ping_interval)
        return EventStreamResponse(_sse(chunks), on_disconnect=completion.cancel, headers=caller.headers)
    result: dict[str, Any] = {}
    errors: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def watch() -> None:  # the client going away cancels the upstream at once
            while (await request.receive())["type"] != "http.disconnect":
                pass
            completion.cancel()

        async def answer() -> None:
            try:
                result.update(await gateway_chat.collect(completion))
            except Exception as exc:  # raised below, outside the task group (no exception group)
                errors.append(exc)
            finally:
                tg.cancel_scope.cancel()

        tg.start_soon(watch)
        tg.start_soon(answer)
    if errors:
        async with _ratelimit_headers(caller):
            raise errors[0]
    if not result:
        completion.cancel()
        return JSONResponse(gateway_chat.error_object("stopped", "the client went away", 499), 499)
    return JSONResponse(result, headers=caller.headers)


@router.post("/embeddings", summary="Embeddings (OpenAI format)")
async def embeddings(body: EmbeddingCreate, principal: V1Principal, runtime: RuntimeDep, ip: ClientIP) -> Any:
    caller = _caller(principal, ip)
    async with _ratelimit_headers(caller):
        result = await gateway_chat.embeddings(runtime, caller, body, usage_recorder(runtime))
    return JSONResponse(result, headers=caller.headers)
