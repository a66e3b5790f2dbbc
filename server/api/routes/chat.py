"""Chat streaming: POST /api/chat, regenerate and stop. Responses are ``text/event-stream``."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request

from server.api.openapi import raises, sse_events
from server.api.sse import EventStreamResponse, encode_events
from server.deps import ClientIP, CurrentUser, RuntimeDep, SessionDep
from server.errors import Conflict, NotFound, PayloadTooLarge, TooManyRequests, Unavailable, UpstreamError
from server.schemas.chat_stream import (
    ChatStreamDelta,
    ChatStreamDone,
    ChatStreamError,
    ChatStreamEvent,
    ChatStreamMeta,
    ChatStreamTitle,
)
from server.schemas.message import ChatCreate, ChatRegenerate, ChatStopRead
from server.services import chat as chat_service

#: Before the stream starts: the conversation or model not found, a stop of a reply not streaming, the
#: limits, and the upstream's own refusal (busy, rate limited, failing, too slow) as an ordinary JSON error.
router = APIRouter(
    prefix="/api/chat",
    tags=["chat"],
    responses=raises(NotFound, Conflict, PayloadTooLarge, TooManyRequests, UpstreamError, Unavailable, 504),
)

#: The events are documented as the ``text/event-stream`` response's schema (one ``ChatStreamEvent`` per
#: event: its name and its JSON data), so the OpenAPI document and the web UI's types carry every payload.
_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatStreamEvent,
        "description": (
            "Server-sent events: meta, delta (coalesced), then done or error; then title when a new "
            "conversation was titled after its first exchange. ': ping' comments at any time."
        ),
    }
}

#: The same events, each with its own payload, as the builder documents a stream (server/api/openapi.py).
_CHAT_EVENTS = sse_events(
    meta=ChatStreamMeta,
    delta=ChatStreamDelta,
    done=ChatStreamDone,
    error=ChatStreamError,
    title=ChatStreamTitle,
)


def _respond(stream: chat_service.ChatStream, runtime: RuntimeDep) -> EventStreamResponse:
    return EventStreamResponse(
        encode_events(stream.events(runtime.settings.chat_ping_interval)),
        on_disconnect=lambda: stream.request_stop("disconnect"),
    )


@router.post(
    "", response_class=EventStreamResponse, responses=_SSE_DOC, summary="Send a message, stream the reply"
)
@_CHAT_EVENTS
async def chat(
    body: ChatCreate,
    request: Request,
    user: CurrentUser,
    runtime: RuntimeDep,
    session: SessionDep,
    ip: ClientIP,
) -> EventStreamResponse:
    stream = await chat_service.start_chat(
        runtime, session, user, body, client_ip=ip, session_id=request.state.session_id
    )
    return _respond(stream, runtime)


@router.post(
    "/{message_id}/regenerate",
    response_class=EventStreamResponse,
    responses=_SSE_DOC,
    summary="A new sibling reply to the same prompt",
)
@_CHAT_EVENTS
async def regenerate(
    message_id: uuid.UUID,
    body: ChatRegenerate,
    request: Request,
    user: CurrentUser,
    runtime: RuntimeDep,
    session: SessionDep,
    ip: ClientIP,
) -> EventStreamResponse:
    stream = await chat_service.start_regenerate(
        runtime, session, user, message_id, body, client_ip=ip, session_id=request.state.session_id
    )
    return _respond(stream, runtime)


@router.post("/{message_id}/stop", response_model=ChatStopRead, summary="Stop a streaming reply")
async def stop(
    message_id: uuid.UUID, user: CurrentUser, runtime: RuntimeDep, session: SessionDep
) -> ChatStopRead:
    return ChatStopRead.model_validate(await chat_service.stop_stream(runtime, session, user, message_id))
