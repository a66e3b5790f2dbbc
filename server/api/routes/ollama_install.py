"""``/api/ollama/runtime``: the Ollama runtime ModelTrain installs and updates per user (admin only).

``GET`` says what is installed (and, with ``?check=true``, the newest release and its download size);
``POST .../install`` and ``POST .../update`` start the job and stream ``progress`` events, then ``done`` or
``error``, like pulls. The job goes on if the client goes away; ``DELETE .../install`` cancels it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from server.api.openapi import raises, sse_events
from server.api.sse import KEEPALIVE_SECONDS, EventStreamResponse, ServerSentEvent, with_keepalive
from server.db.models import User
from server.deps import AdminUser, RuntimeDep
from server.errors import Conflict, NotFound, Unavailable
from server.schemas.ollama import OllamaJobProgress, OllamaRuntimeDone, OllamaRuntimeRead, OllamaStreamError
from server.services import ollama_runtime
from server.services.ollama_install import InstallJob, Kind

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/ollama/runtime", tags=["ollama"], responses=raises(NotFound, Conflict, Unavailable)
)

_SSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "progress, then done or error"}
}


@router.get("", response_model=OllamaRuntimeRead, summary="The Ollama runtime on this machine (admin)")
def get_runtime(
    _: AdminUser,
    runtime: RuntimeDep,
    check: bool = Query(False, description="Also ask the release site for the newest version and its size"),
) -> OllamaRuntimeRead:
    installer = ollama_runtime.get_installer(runtime)
    return installer.info(ollama_runtime.get_daemon(runtime), check=check)


def _stream(job: InstallJob) -> EventStreamResponse:
    queue = job.subscribe()

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            while True:
                event, data = await queue.get()
                yield ServerSentEvent(event, data)
                if event in ("done", "error"):
                    return
        finally:
            job.unsubscribe(queue)

    return EventStreamResponse(with_keepalive(events(), KEEPALIVE_SECONDS))


async def _start(kind: Kind, user: User, runtime: RuntimeDep) -> EventStreamResponse:
    installer = ollama_runtime.get_installer(runtime)
    daemon = ollama_runtime.get_daemon(runtime)
    job = await run_in_threadpool(installer.start, kind, daemon)
    log.info("Ollama runtime %s started by user %s", kind, user.id)  # no audit log exists yet
    return _stream(job)


@router.post(
    "/install",
    response_class=EventStreamResponse,
    responses=_SSE,
    summary="Download, verify and unpack the Ollama runtime, then start it; streams progress (admin)",
)
@sse_events(progress=OllamaJobProgress, done=OllamaRuntimeDone, error=OllamaStreamError)
async def install_runtime(user: AdminUser, runtime: RuntimeDep) -> EventStreamResponse:
    return await _start("install", user, runtime)


@router.post(
    "/update",
    response_class=EventStreamResponse,
    responses=_SSE,
    summary="Install the newest Ollama beside the current one, switch if it starts; streams progress (admin)",
)
@sse_events(progress=OllamaJobProgress, done=OllamaRuntimeDone, error=OllamaStreamError)
async def update_runtime(user: AdminUser, runtime: RuntimeDep) -> EventStreamResponse:
    return await _start("update", user, runtime)


@router.delete(
    "/install", response_model=OllamaRuntimeRead, summary="Cancel a running install or update (admin)"
)
def cancel_install(_: AdminUser, runtime: RuntimeDep) -> OllamaRuntimeRead:
    installer = ollama_runtime.get_installer(runtime)
    if installer.cancel() is None:
        raise NotFound("no Ollama install or update is running", code="runtime_not_running")
    return installer.info(ollama_runtime.get_daemon(runtime), check=False)
