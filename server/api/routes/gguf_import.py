"""``POST /api/ollama/models/import``: a GGUF file, streamed as the raw request body, becomes an Ollama
model (admin). The body limit of the network guard is ``MODELTRAIN_GGUF_IMPORT_MAX_BYTES`` on this route
alone (server/app.py); the service checks the same cap itself, up front and while the body streams in.

Mistakes the upload reveals are plain JSON errors (invalid or taken name, not GGUF, too large, disk
full, Ollama down); once the file is in, the answer is an event stream: ``progress`` (phase ``hashing``
once, then ``uploading`` and ``creating``), then ``done`` or ``error``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from server.api.openapi import raises, sse_events
from server.api.sse import KEEPALIVE_SECONDS, EventStreamResponse, with_keepalive
from server.deps import AdminUser, RuntimeDep, SessionDep, TargetDep
from server.errors import (
    Conflict,
    InsufficientStorage,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UpstreamError,
)
from server.schemas.common import MODEL_NAME_SCHEMA
from server.schemas.ollama import OllamaImportDone, OllamaJobProgress, OllamaStreamError
from server.services import gguf_import

router = APIRouter(
    prefix="/api/ollama",
    tags=["ollama"],
    responses=raises(
        NotFound, Conflict, PayloadTooLarge, InsufficientStorage, UpstreamError, Unavailable, 411
    ),
)

#: nginx's "client closed request": nobody reads it, but the access log shows what happened.
CLIENT_CLOSED = 499


class _Closing:
    """An async iterator that runs ``cleanup`` when the response closes it, even if it never started
    (an async generator that never ran skips its ``finally``)."""

    def __init__(self, inner: AsyncIterator[bytes], cleanup: Callable[[], None]) -> None:
        self.inner = inner
        self.cleanup = cleanup

    def __aiter__(self) -> _Closing:
        return self

    async def __anext__(self) -> bytes:
        return await self.inner.__anext__()

    async def aclose(self) -> None:
        try:
            aclose = getattr(self.inner, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self.cleanup()


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():  # the network guard refuses these first
        raise InvalidInput("invalid Content-Length", code="bad_request")
    return int(value)


_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The GGUF file itself, as the raw body (not multipart).",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/models/import",
    response_class=EventStreamResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "progress, then done or error"}},
    openapi_extra=_BODY,
    summary="Import a GGUF file (raw request body) as a model; streams progress (admin)",
)
@sse_events(progress=OllamaJobProgress, done=OllamaImportDone, error=OllamaStreamError)
async def import_gguf(
    request: Request,
    _: AdminUser,
    session: SessionDep,
    runtime: RuntimeDep,
    target: TargetDep,
    name: Annotated[
        str, Query(max_length=600, description="Name of the new model", json_schema_extra=MODEL_NAME_SCHEMA)
    ],
    filename: Annotated[
        str | None, Query(max_length=255, description="The file's own name (kept as Ollama's file name)")
    ] = None,
) -> Response:
    # The request's transaction (SQLite: the write lock) must not stay open while the file streams in.
    await run_in_threadpool(session.commit)
    settings = runtime.settings
    length = _content_length(request)
    await gguf_import.prepare(settings, target, name, length)
    try:
        received = await gguf_import.receive(settings, request.stream(), filename, length)
    except ClientDisconnect:
        return Response(status_code=CLIENT_CLOSED)
    events = gguf_import.import_events(settings, target, name, received)
    body = _Closing(with_keepalive(events, KEEPALIVE_SECONDS), received.discard)
    return EventStreamResponse(body)
