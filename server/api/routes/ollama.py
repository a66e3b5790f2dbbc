"""``/api/ollama``: daemon status and control, local models, running models, pulls.

Reading (status, models, running) needs a signed-in user; every change, the logs and pulls need an
administrator. ``?provider=<id>`` picks another Ollama provider row; the daemon itself supervises only
the default local URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool

from server.api.openapi import raises, sse_events
from server.api.sse import KEEPALIVE_SECONDS, EventStreamResponse, ServerSentEvent, with_keepalive
from server.deps import AdminUser, AuditCtx, CurrentUser, RuntimeDep, SessionDep, TargetDep
from server.errors import Conflict, NotFound, Unavailable, UpstreamError
from server.schemas.common import MODEL_NAME_SCHEMA
from server.schemas.ollama import (
    OllamaLogsRead,
    OllamaModelCopy,
    OllamaModelCreate,
    OllamaModelDetailRead,
    OllamaModelLoad,
    OllamaModelPage,
    OllamaModelRead,
    OllamaModelRef,
    OllamaPullCreate,
    OllamaPullDone,
    OllamaPullFailed,
    OllamaPullPage,
    OllamaPullProgress,
    OllamaPullRead,
    OllamaRunningPage,
    OllamaRunningRead,
    OllamaStatusRead,
)
from server.services import cluster, ollama_admin, ollama_pulls, ollama_runtime
from server.services.audit import AuditAction
from server.services.ollama_pulls import PullEvent, PullJob, PullManager

#: 404: the `provider` named or the model; 409: a model or pull in the way; 502/503: Ollama failing or down.
router = APIRouter(
    prefix="/api/ollama", tags=["ollama"], responses=raises(NotFound, Conflict, UpstreamError, Unavailable)
)

#: A model name in the path: the grammar is documented; the service enforces it (422 invalid_model_name).
ModelNamePath = Annotated[
    str, PathParam(description="Ollama model name", json_schema_extra=MODEL_NAME_SCHEMA)
]

#: How long POST /pull waits for the first layer's disk check before it starts streaming.
PULL_CHECK_TIMEOUT = 15.0
#: How long cancelling a pull another instance runs waits for that instance to report it ended.
REMOTE_CANCEL_TIMEOUT = 10.0
#: Names the instance that answered a pull request (several instances or gunicorn workers).
INSTANCE_HEADER = "X-ModelTrain-Instance"
_SSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "progress, then done or error"}
}


# --- daemon ---------------------------------------------------------------------------------------


@router.get("/status", response_model=OllamaStatusRead, summary="Daemon / host status")
def get_status(_: CurrentUser, runtime: RuntimeDep, target: TargetDep) -> OllamaStatusRead:
    daemon = ollama_runtime.get_daemon(runtime)
    status = ollama_admin.target_status(daemon, target)
    if runtime.ollama_installer is not None:  # the runtime on this machine, whichever host is shown
        status.runtime = runtime.ollama_installer.info(daemon, check=False, refresh=False)
    return status


@router.post("/start", response_model=OllamaStatusRead, summary="Start (or adopt) the local Ollama (admin)")
def start_daemon(
    _: AdminUser,
    runtime: RuntimeDep,
    session: SessionDep,
    ctx: AuditCtx,
    wait: bool = Query(True, description="Wait until it answers"),
) -> OllamaStatusRead:
    return ollama_runtime.start_daemon(runtime, session, ctx, wait=wait)


@router.post("/stop", response_model=OllamaStatusRead, summary="Stop the managed Ollama (admin)")
def stop_daemon(_: AdminUser, runtime: RuntimeDep, session: SessionDep, ctx: AuditCtx) -> OllamaStatusRead:
    return ollama_runtime.stop_daemon(runtime, session, ctx)


@router.post("/restart", response_model=OllamaStatusRead, summary="Restart the managed Ollama (admin)")
def restart_daemon(
    _: AdminUser,
    runtime: RuntimeDep,
    session: SessionDep,
    ctx: AuditCtx,
    wait: bool = Query(True, description="Wait until it answers"),
) -> OllamaStatusRead:
    return ollama_runtime.restart_daemon(runtime, session, ctx, wait=wait)


@router.get("/logs", response_model=OllamaLogsRead, summary="Last lines of the managed Ollama's log (admin)")
def get_logs(_: AdminUser, runtime: RuntimeDep, tail: int = Query(200, ge=1, le=5000)) -> OllamaLogsRead:
    return OllamaLogsRead(lines=ollama_runtime.get_daemon(runtime).tail_logs(tail))


# --- models ---------------------------------------------------------------------------------------


@router.get("/models", response_model=OllamaModelPage, summary="Local models")
def list_models(_: CurrentUser, target: TargetDep) -> OllamaModelPage:
    items = [OllamaModelRead.model_validate(m) for m in ollama_admin.list_models(target)]
    return OllamaModelPage(items=items, total=len(items))


@router.post(
    "/models/copy",
    response_model=OllamaModelRef,
    status_code=status.HTTP_201_CREATED,
    summary="Copy a model (admin)",
)
def copy_model(
    body: OllamaModelCopy, _: AdminUser, target: TargetDep, session: SessionDep, ctx: AuditCtx
) -> OllamaModelRef:
    result = ollama_admin.copy_model(target, body.source, body.destination)
    ollama_runtime.record_model(
        session, ctx, AuditAction.MODEL_CREATED, target, body.destination, {"copied_from": body.source}
    )
    return OllamaModelRef.model_validate(result)


@router.post(
    "/models/create",
    response_model=OllamaModelRef,
    status_code=status.HTTP_201_CREATED,
    summary="Create a model from a base model (system prompt, template, parameters) or a Modelfile (admin)",
)
def create_model(
    body: OllamaModelCreate,
    _: AdminUser,
    runtime: RuntimeDep,
    target: TargetDep,
    session: SessionDep,
    ctx: AuditCtx,
) -> OllamaModelRef:
    result = ollama_admin.create_model(
        runtime.settings,
        target,
        body.name,
        body.from_,
        body.system,
        body.parameters,
        template=body.template,
        modelfile=body.modelfile,
        quantize=body.quantize,
    )
    ollama_runtime.record_model(
        session,
        ctx,
        AuditAction.MODEL_CREATED,
        target,
        body.name,
        {"from": body.from_, "modelfile": body.modelfile is not None, "quantize": body.quantize},
    )
    return OllamaModelRef.model_validate(result)


@router.get("/models/{name:path}", response_model=OllamaModelDetailRead, summary="Model details")
def show_model(name: ModelNamePath, _: CurrentUser, target: TargetDep) -> OllamaModelDetailRead:
    return OllamaModelDetailRead.model_validate(ollama_admin.show_model(target, name))


@router.delete(
    "/models/{name:path}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a model (admin)"
)
def delete_model(
    name: ModelNamePath, _: AdminUser, target: TargetDep, session: SessionDep, ctx: AuditCtx
) -> None:
    ollama_admin.delete_model(target, name)
    ollama_runtime.record_model(session, ctx, AuditAction.MODEL_DELETED, target, name)


# --- running models -------------------------------------------------------------------------------


@router.get("/running", response_model=OllamaRunningPage, summary="Models loaded in memory")
def list_running(_: CurrentUser, target: TargetDep) -> OllamaRunningPage:
    items = [OllamaRunningRead.model_validate(m) for m in ollama_admin.list_running(target)]
    return OllamaRunningPage(items=items, total=len(items))


@router.post(
    "/running/{name:path}/unload", status_code=status.HTTP_204_NO_CONTENT, summary="Unload a model (admin)"
)
def unload_model(name: ModelNamePath, _: AdminUser, target: TargetDep) -> None:
    ollama_admin.unload_model(target, name)


@router.post(
    "/running/{name:path}/load",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Load a model; keep_alive -1 pins it (admin)",
)
def load_model(
    name: ModelNamePath, _: AdminUser, target: TargetDep, body: OllamaModelLoad | None = None
) -> None:
    ollama_admin.load_model(target, name, body.keep_alive if body else None)


# --- pulls ----------------------------------------------------------------------------------------


def _instance(runtime: RuntimeDep) -> dict[str, str]:
    return {INSTANCE_HEADER: cluster.instance_name(runtime.settings)}


def _event_stream(
    runtime: RuntimeDep, manager: PullManager, job: PullJob, queue: asyncio.Queue[PullEvent] | None = None
) -> EventStreamResponse:
    queue = queue if queue is not None else manager.subscribe(job)

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            while True:
                event, data = await queue.get()
                yield ServerSentEvent(event, data)
                if event in ("done", "error"):
                    return
        finally:
            manager.unsubscribe(job, queue)

    return EventStreamResponse(with_keepalive(events(), KEEPALIVE_SECONDS), headers=_instance(runtime))


def _remote_event_stream(runtime: RuntimeDep, key: str) -> EventStreamResponse:
    async def events() -> AsyncIterator[ServerSentEvent]:
        async for event, data in cluster.remote_pull_events(runtime, key):
            yield ServerSentEvent(event, data)

    return EventStreamResponse(with_keepalive(events(), KEEPALIVE_SECONDS), headers=_instance(runtime))


@router.post(
    "/pull",
    response_class=EventStreamResponse,
    responses=_SSE,
    summary="Pull a model; streams progress (admin). The pull continues if the client goes away.",
)
@sse_events(progress=OllamaPullProgress, done=OllamaPullDone, error=OllamaPullFailed)
async def pull_model(
    body: OllamaPullCreate, _: AdminUser, runtime: RuntimeDep, target: TargetDep, ctx: AuditCtx
) -> EventStreamResponse:
    manager = ollama_runtime.get_pulls(runtime)
    job, created = await manager.start(
        target, body.name, on_finish=ollama_runtime.pull_recorder(runtime, ctx)
    )
    queue = manager.subscribe(job)  # before waiting: the client that started the pull sees every event
    try:
        if created:
            await manager.wait_checkpoint(job, PULL_CHECK_TIMEOUT)
            error = ollama_pulls.early_pull_error(job)
            if error is not None:
                raise error
    except BaseException:
        manager.unsubscribe(job, queue)
        raise
    return _event_stream(runtime, manager, job, queue)


@router.get("/pulls", response_model=OllamaPullPage, summary="Active and recent pulls (admin)")
def list_pulls(_: AdminUser, runtime: RuntimeDep, target: TargetDep, response: Response) -> OllamaPullPage:
    # This instance's pulls and those other instances sharing the database run.
    response.headers.update(_instance(runtime))
    items = [OllamaPullRead.model_validate(p) for p in cluster.list_pulls(runtime, target.url)]
    return OllamaPullPage(items=items, total=len(items))


@router.get(
    "/pulls/{name:path}/events",
    response_class=EventStreamResponse,
    responses=_SSE,
    summary="Re-attach to a pull's progress, on whichever instance runs it (admin)",
)
@sse_events(progress=OllamaPullProgress, done=OllamaPullDone, error=OllamaPullFailed)
async def pull_events(
    name: ModelNamePath, _: AdminUser, runtime: RuntimeDep, session: SessionDep, target: TargetDep
) -> EventStreamResponse:
    ollama_admin.check_name(name)
    manager = ollama_runtime.get_pulls(runtime)
    job = manager.get(target.url, name)
    if job is None or job.state != "running":
        # Another instance's running pull wins over a finished one of this instance.
        await run_in_threadpool(session.commit)  # the stream must not hold the request's transaction
        remote = await run_in_threadpool(cluster.find_remote_pull, runtime, target.url, name)
        if remote is not None and (job is None or remote[2].get("state") == "running"):
            return _remote_event_stream(runtime, remote[0])
    if job is None:
        raise NotFound("no recent pull of this model", code="pull_not_found")
    return _event_stream(runtime, manager, job)


@router.delete(
    "/pull/{name:path}",
    response_model=OllamaPullRead,
    summary="Cancel a running pull, on whichever instance runs it (admin)",
)
def cancel_pull(
    name: ModelNamePath,
    _: AdminUser,
    runtime: RuntimeDep,
    session: SessionDep,
    target: TargetDep,
    response: Response,
) -> OllamaPullRead:
    ollama_admin.check_name(name)
    response.headers.update(_instance(runtime))
    manager = ollama_runtime.get_pulls(runtime)
    # No transaction is open while this waits (see ollama_target): the pull's own end writes its audit
    # entry, and waiting under the write lock stalled it, and every other writer, for the whole timeout.
    job = manager.get(target.url, name)
    if job is not None and job.state == "running":
        summary = {**manager.cancel(target.url, name), "instance": cluster.instance_name(runtime.settings)}
        return OllamaPullRead.model_validate(summary)
    remote = cluster.cancel_remote_pull(runtime, target.url, name, REMOTE_CANCEL_TIMEOUT)
    if remote is None:
        raise NotFound("no pull of this model is running", code="pull_not_found")
    return OllamaPullRead.model_validate(remote)
