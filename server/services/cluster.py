"""Several server instances sharing one database behave as one.

What is already shared through the database needs nothing here: sessions and refresh tokens, login
throttling, the scheduled-backup lease. Two things live in one process's memory and are bridged here:

* **Stopping a stream** (``stream_stops``): ``POST /api/chat/{id}/stop`` on an instance that does not own
  the stream records a stop request; every instance with active streams checks for requests about its
  own streams every ``stop_poll_seconds`` (one indexed query, only while it streams), stops them and
  deletes the row. The requesting instance waits until the reply's status leaves ``streaming``.
* **Model pulls** (``shared_pulls``): each instance mirrors its PullManager's jobs about once a second;
  listing pulls merges the local jobs with the other instances' fresh rows.

Each instance has a name (``MODELTRAIN_INSTANCE_NAME``, default ``<hostname>:<pid>``), also used as the
``instance`` label of ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from anyio import to_thread
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from server import aio
from server.db.models import Message, MessageStatus, SharedPull, StreamStop
from server.db.session import session_scope
from server.runtime import Runtime
from server.settings import Settings

log = logging.getLogger(__name__)

#: How often this instance's pulls are copied to the database while it has any.
PULL_MIRROR_SECONDS = 1.0
#: Rows not refreshed for this long belong to an instance that stopped: ignored, then deleted.
PULL_STALE_SECONDS = 10.0
#: Stop requests nobody picked up (the stream had ended) are deleted after this long.
STOP_REQUEST_TTL = timedelta(minutes=10)


def instance_name(settings: Settings) -> str:
    return settings.instance_name or f"{socket.gethostname()}:{os.getpid()}"


# --- stop requests ---------------------------------------------------------------------------------------


def request_remote_stop(runtime: Runtime, message_id: uuid.UUID) -> None:
    """Record a stop for a reply streamed by another instance (blocking: call from a thread)."""
    try:
        with session_scope(runtime.session_factory) as session:
            if session.get(StreamStop, message_id) is None:
                session.add(StreamStop(message_id=message_id))
    except IntegrityError:
        pass  # requested twice at the same moment: one row is enough


def message_status(runtime: Runtime, message_id: uuid.UUID) -> str | None:
    with session_scope(runtime.read_session_factory or runtime.session_factory) as session:
        return session.scalar(select(Message.status).where(Message.id == message_id))


async def wait_remote_stop(runtime: Runtime, message_id: uuid.UUID, timeout: float) -> str | None:
    """Poll the reply's status until it is no longer ``streaming`` (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    interval = min(0.05, runtime.settings.stop_poll_seconds)
    while True:
        status = await to_thread.run_sync(message_status, runtime, message_id)
        if status != MessageStatus.STREAMING.value or time.monotonic() >= deadline:
            return status
        await asyncio.sleep(interval)


def _claim_stops(runtime: Runtime, active: list[uuid.UUID]) -> list[uuid.UUID]:
    with session_scope(runtime.session_factory) as session:
        found = list(session.scalars(select(StreamStop.message_id).where(StreamStop.message_id.in_(active))))
        if found:
            session.execute(delete(StreamStop).where(StreamStop.message_id.in_(found)))
        return found


def _expire_stops(runtime: Runtime) -> None:
    cutoff = datetime.now(timezone.utc) - STOP_REQUEST_TTL
    with session_scope(runtime.session_factory) as session:
        session.execute(delete(StreamStop).where(StreamStop.requested_at < cutoff))


# --- pulls -----------------------------------------------------------------------------------------------


def _jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in summary.items():
        if isinstance(v, datetime):
            v = v.isoformat()
        elif isinstance(v, uuid.UUID):
            v = str(v)
        out[k] = v
    return out


def _mirror_pulls(runtime: Runtime, name: str, jobs: list[dict[str, Any]]) -> None:
    now = datetime.now(timezone.utc)
    keys = set()
    with session_scope(runtime.session_factory) as session:
        for job in jobs:
            key = f"{name}|{job['url']}|{job['name']}"[:1200]
            keys.add(key)
            row = session.get(SharedPull, key)
            if row is None:
                session.add(
                    SharedPull(
                        key=key,
                        instance=name[:128],
                        url=job["url"][:1000],
                        name=job["name"][:400],
                        summary=_jsonable(job),
                        updated_at=now,
                    )
                )
            else:
                row.summary = _jsonable(job)
                row.updated_at = now
        stale = delete(SharedPull).where(SharedPull.instance == name[:128])
        if keys:
            stale = stale.where(SharedPull.key.not_in(keys))
        session.execute(stale)
        session.execute(
            delete(SharedPull).where(SharedPull.updated_at < now - timedelta(seconds=PULL_STALE_SECONDS * 6))
        )


def list_pulls(runtime: Runtime, url: str | None = None) -> list[dict[str, Any]]:
    """This instance's pulls plus the other instances' (blocking: routes are ``def``)."""
    local = runtime.ollama_pulls.list(url) if runtime.ollama_pulls is not None else []
    name = instance_name(runtime.settings)
    fresh = datetime.now(timezone.utc) - timedelta(seconds=PULL_STALE_SECONDS)
    with session_scope(runtime.read_session_factory or runtime.session_factory) as session:
        query = select(SharedPull).where(SharedPull.instance != name[:128], SharedPull.updated_at >= fresh)
        if url is not None:
            query = query.where(SharedPull.url == url)
        remote = [dict(row.summary) for row in session.scalars(query)]
    seen = {(p["url"], p["name"]) for p in local}
    merged = local + [p for p in remote if (p.get("url"), p.get("name")) not in seen]
    merged.sort(key=lambda p: str(p.get("started_at") or ""), reverse=True)
    return merged


# --- the per-instance background task --------------------------------------------------------------------


class ClusterWatcher:
    """The per-instance task. It knows this process's streams and pulls only through callbacks, so this
    module imports neither the chat pipeline nor the pull manager."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        active_streams: Callable[[], list[uuid.UUID]],
        stop_stream: Callable[[uuid.UUID], None],
        local_pulls: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self.runtime = runtime
        self.name = instance_name(runtime.settings)
        self._active_streams = active_streams
        self._stop_stream = stop_stream
        self._local_pulls = local_pulls
        self._task: asyncio.Task[None] | None = None
        self._mirrored = False

    async def _check_stops(self) -> None:
        ids = self._active_streams()
        if not ids:
            return
        for message_id in await to_thread.run_sync(_claim_stops, self.runtime, ids):
            log.info("reply stopped on request of another instance")
            self._stop_stream(message_id)

    async def _mirror(self) -> None:
        jobs = self._local_pulls()
        if jobs or self._mirrored:
            await to_thread.run_sync(_mirror_pulls, self.runtime, self.name, jobs)
            self._mirrored = bool(jobs)

    async def _run(self) -> None:
        poll = self.runtime.settings.stop_poll_seconds
        last_mirror = last_expire = 0.0
        while True:
            await asyncio.sleep(poll)
            now = time.monotonic()
            try:
                await self._check_stops()
                if now - last_mirror >= PULL_MIRROR_SECONDS:
                    last_mirror = now
                    await self._mirror()
                if now - last_expire >= 60:
                    last_expire = now
                    await to_thread.run_sync(_expire_stops, self.runtime)
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup must not end the watcher
                log.warning("multi-instance check failed", exc_info=True)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="modeltrain-cluster")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await aio.cancel_and_wait(task)
        if self._mirrored:
            with contextlib.suppress(Exception):
                await to_thread.run_sync(_mirror_pulls, self.runtime, self.name, [])


async def start(
    runtime: Runtime,
    *,
    active_streams: Callable[[], list[uuid.UUID]],
    stop_stream: Callable[[uuid.UUID], None],
    local_pulls: Callable[[], list[dict[str, Any]]],
) -> None:
    """Lifespan hook: start this instance's watcher (``runtime.cluster``)."""
    runtime.cluster = ClusterWatcher(
        runtime, active_streams=active_streams, stop_stream=stop_stream, local_pulls=local_pulls
    )
    runtime.cluster.start()


async def stop(runtime: Runtime) -> None:
    watcher, runtime.cluster = runtime.cluster, None
    if watcher is not None:
        await watcher.stop()
