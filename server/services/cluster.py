"""Several server instances sharing one database behave as one.

What is already shared through the database needs nothing here: sessions and refresh tokens, login
throttling, the scheduled-backup lease. Two things live in one process's memory and are bridged here:

* **Stopping a stream** (``stream_stops``): ``POST /api/chat/{id}/stop`` on an instance that does not own
  the stream records a stop request; every instance with active streams checks for requests about its
  own streams every ``stop_poll_seconds`` (one indexed query, only while it streams), stops them and
  deletes the row. The requesting instance waits until the reply's status leaves ``streaming``.
* **Model pulls** (``shared_pulls``): each instance mirrors its PullManager's jobs every
  ``PULL_MIRROR_SECONDS`` while one runs (every few seconds otherwise); listing pulls merges the local
  jobs with the other instances' fresh rows, re-attaching on another instance streams the shared row's
  progress, and cancelling a pull another instance runs records a ``pull_cancels`` row that the owner's
  watcher picks up, like a stop.
* **The System page** (``instance_snapshots``): each instance writes its metrics summary and active
  alerts when it starts, and then every ``SNAPSHOT_SECONDS`` while another instance's row is fresh (an
  instance alone writes nothing more); ``/api/metrics`` and ``/api/alerts`` add the other instances'
  fresh rows, labelled with their names, so no answer is silently one worker's.
* **Wake-ups** (services/cluster_signals.py): on PostgreSQL requests and pull updates are followed by a
  ``NOTIFY`` that every instance ``LISTEN``s for, so they are seen at once; on SQLite (and while the
  listening connection is down) the intervals above apply.

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
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from anyio import to_thread
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from server import aio
from server.db.models import InstanceSnapshot, Message, MessageStatus, PullCancel, SharedPull, StreamStop
from server.db.session import session_scope
from server.runtime import Runtime
from server.services.cluster_signals import Signals, conninfo, notify
from server.services.ollama_admin import canonical_name
from server.settings import Settings

log = logging.getLogger(__name__)

#: How often this instance's pulls are copied to the database while one runs (a progress bar elsewhere).
PULL_MIRROR_SECONDS = 0.5
#: How often finished pulls are re-copied, so their rows stay fresh for the other instances.
PULL_REFRESH_SECONDS = 3.0
#: Rows not refreshed for this long belong to an instance that stopped: ignored, then deleted.
PULL_STALE_SECONDS = 10.0
#: How often each instance publishes its snapshot (metrics summary, active alerts).
SNAPSHOT_SECONDS = 5.0
#: Snapshots older than this belong to an instance that stopped: ignored, then (x6) deleted.
SNAPSHOT_STALE_SECONDS = 20.0
#: Stop requests nobody picked up (the stream had ended) are deleted after this long.
STOP_REQUEST_TTL = timedelta(minutes=10)


def instance_name(settings: Settings) -> str:
    return settings.instance_name or f"{socket.gethostname()}:{os.getpid()}"


def host_name() -> str:
    return socket.gethostname()


# --- stop requests ---------------------------------------------------------------------------------------


def request_remote_stop(runtime: Runtime, message_id: uuid.UUID) -> None:
    """Record a stop for a reply streamed by another instance (blocking: call from a thread)."""
    try:
        with session_scope(runtime.session_factory) as session:
            if session.get(StreamStop, message_id) is None:
                session.add(StreamStop(message_id=message_id))
                notify(session, "stop")
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


def pull_key(instance: str, url: str, name: str) -> str:
    return f"{instance}|{url}|{name}"[:1200]


def _mirror_pulls(runtime: Runtime, name: str, jobs: list[dict[str, Any]]) -> None:
    now = datetime.now(timezone.utc)
    keys = set()
    with session_scope(runtime.session_factory) as session:
        for job in jobs:
            key = pull_key(name, job["url"], job["name"])
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
        if jobs:
            notify(session, "pull")


def list_pulls(runtime: Runtime, url: str | None = None) -> list[dict[str, Any]]:
    """This instance's pulls plus the other instances' (blocking: routes are ``def``)."""
    local = runtime.ollama_pulls.list(url) if runtime.ollama_pulls is not None else []
    name = instance_name(runtime.settings)
    fresh = datetime.now(timezone.utc) - timedelta(seconds=PULL_STALE_SECONDS)
    with session_scope(runtime.read_session_factory or runtime.session_factory) as session:
        query = select(SharedPull).where(SharedPull.instance != name[:128], SharedPull.updated_at >= fresh)
        if url is not None:
            query = query.where(SharedPull.url == url)
        remote = [{**row.summary, "instance": row.instance} for row in session.scalars(query)]
    local = [{**p, "instance": name} for p in local]
    seen = {(p["url"], p["name"]) for p in local}
    merged = local + [p for p in remote if (p.get("url"), p.get("name")) not in seen]
    merged.sort(key=lambda p: str(p.get("started_at") or ""), reverse=True)
    return merged


def find_remote_pull(runtime: Runtime, url: str, name: str) -> tuple[str, str, dict[str, Any]] | None:
    """``(key, instance, summary)`` of the freshest pull of ``name`` into ``url`` another instance
    mirrors (a running one first), or None."""
    me = instance_name(runtime.settings)[:128]
    fresh = datetime.now(timezone.utc) - timedelta(seconds=PULL_STALE_SECONDS)
    wanted = canonical_name(name)
    with session_scope(runtime.read_session_factory or runtime.session_factory) as session:
        rows = session.scalars(
            select(SharedPull).where(
                SharedPull.instance != me, SharedPull.url == url, SharedPull.updated_at >= fresh
            )
        ).all()
        found = [
            (row.key, row.instance, dict(row.summary)) for row in rows if canonical_name(row.name) == wanted
        ]
    found.sort(key=lambda f: (f[2].get("state") == "running", str(f[2].get("started_at") or "")))
    return found[-1] if found else None


def remote_pull(runtime: Runtime, key: str) -> dict[str, Any] | None:
    """The mirrored summary of one pull, None once its row went stale or away."""
    fresh = datetime.now(timezone.utc) - timedelta(seconds=PULL_STALE_SECONDS)
    with session_scope(runtime.read_session_factory or runtime.session_factory) as session:
        row = session.get(SharedPull, key)
        if row is None or row.updated_at < fresh:
            return None
        return {**row.summary, "instance": row.instance}


def request_pull_cancel(runtime: Runtime, key: str, instance: str) -> None:
    """Record a cancel for a pull another instance runs (blocking: call from a thread)."""
    try:
        with session_scope(runtime.session_factory) as session:
            if session.get(PullCancel, key) is None:
                session.add(PullCancel(key=key, instance=instance[:128]))
                notify(session, "pull_cancel")
    except IntegrityError:
        pass  # requested twice at the same moment: one row is enough


def cancel_remote_pull(runtime: Runtime, url: str, name: str, timeout: float) -> dict[str, Any] | None:
    """Cancel the pull of ``name`` another instance runs and wait (bounded) until its mirrored state
    leaves ``running``; returns that summary, or None when no instance runs such a pull. Blocking."""
    found = find_remote_pull(runtime, url, name)
    if found is None or found[2].get("state") != "running":
        return None
    key, owner, summary = found
    request_pull_cancel(runtime, key, owner)
    deadline = time.monotonic() + timeout
    interval = min(0.05, runtime.settings.stop_poll_seconds)
    latest: dict[str, Any] | None = {**summary, "instance": owner}
    while latest is not None and latest.get("state") == "running" and time.monotonic() < deadline:
        time.sleep(interval)  # bounded wait for the owner, like a remote stop
        latest = remote_pull(runtime, key) or latest
    return latest


_PROGRESS_FIELDS = (
    "name",
    "status",
    "digest",
    "total",
    "completed",
    "percent",
    "bytes_per_s",
    "eta_s",
    "stalled",
)


def _final_event(summary: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The ``done``/``error`` event the owner's PullManager sent, rebuilt from its summary."""
    if summary.get("state") == "success":
        elapsed = None
        with contextlib.suppress(KeyError, TypeError, ValueError):
            started = datetime.fromisoformat(summary["started_at"])
            finished = datetime.fromisoformat(summary["finished_at"])
            elapsed = round((finished - started).total_seconds(), 3)
        return "done", {"name": summary.get("name"), "status": "success", "elapsed_s": elapsed}
    error = summary.get("error") or {"code": "pull_failed", "message": "the pull failed"}
    return "error", {"name": summary.get("name"), **error}


async def remote_pull_events(runtime: Runtime, key: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A pull another instance runs, as the owner's event stream: ``progress`` whenever the mirrored row
    changes, then one ``done`` or ``error`` (also when the owner stops mirroring it)."""
    signals = runtime.cluster.signals if runtime.cluster is not None else None
    interval = min(PULL_MIRROR_SECONDS, runtime.settings.stop_poll_seconds)
    last: dict[str, Any] | None = None
    seen: int | None = None
    while True:
        summary = await to_thread.run_sync(remote_pull, runtime, key)
        if summary is None:
            name = key.rsplit("|", 1)[-1]
            yield (
                "error",
                {"name": name, "code": "pull_lost", "message": "the instance running the pull stopped"},
            )
            return
        progress = {k: summary.get(k) for k in _PROGRESS_FIELDS}
        if progress != last:
            last = progress
            yield "progress", progress
        if summary.get("state") != "running":
            yield _final_event(summary)
            return
        if signals is not None:
            seen = await signals.wait(interval, seen)
        else:
            await asyncio.sleep(interval)


def _claim_pull_cancels(runtime: Runtime, name: str) -> list[str]:
    with session_scope(runtime.session_factory) as session:
        found = list(session.scalars(select(PullCancel.key).where(PullCancel.instance == name[:128])))
        if found:
            session.execute(delete(PullCancel).where(PullCancel.key.in_(found)))
        return found


def _expire_pull_cancels(runtime: Runtime) -> None:
    cutoff = datetime.now(timezone.utc) - STOP_REQUEST_TTL
    with session_scope(runtime.session_factory) as session:
        session.execute(delete(PullCancel).where(PullCancel.requested_at < cutoff))


# --- instance snapshots ----------------------------------------------------------------------------


def publish_snapshot(runtime: Runtime, name: str, snapshot: dict[str, Any]) -> None:
    now = datetime.now(timezone.utc)
    with session_scope(runtime.session_factory) as session:
        row = session.get(InstanceSnapshot, name[:128])
        if row is None:
            row = InstanceSnapshot(instance=name[:128], host=host_name()[:255], metrics={}, alerts=[])
            session.add(row)
        row.metrics = snapshot.get("metrics") or {}
        row.alerts = snapshot.get("alerts") or []
        row.updated_at = now
        session.execute(
            delete(InstanceSnapshot).where(
                InstanceSnapshot.updated_at < now - timedelta(seconds=SNAPSHOT_STALE_SECONDS * 6)
            )
        )


def withdraw_snapshot(runtime: Runtime, name: str) -> None:
    with session_scope(runtime.session_factory) as session:
        session.execute(delete(InstanceSnapshot).where(InstanceSnapshot.instance == name[:128]))


def others_alive(runtime: Runtime, name: str) -> bool:
    """Whether another instance wrote its snapshot recently (then this one keeps publishing too)."""
    fresh = datetime.now(timezone.utc) - timedelta(seconds=SNAPSHOT_STALE_SECONDS)
    with session_scope(runtime.read_session_factory or runtime.session_factory) as session:
        found = session.scalar(
            select(InstanceSnapshot.instance)
            .where(InstanceSnapshot.instance != name[:128], InstanceSnapshot.updated_at >= fresh)
            .limit(1)
        )
        return found is not None


def other_snapshots(runtime: Runtime) -> list[dict[str, Any]]:
    """The other live instances' snapshots (blocking): ``instance``, ``host``, ``updated_at``,
    ``metrics``, ``alerts``, by name."""
    me = instance_name(runtime.settings)[:128]
    fresh = datetime.now(timezone.utc) - timedelta(seconds=SNAPSHOT_STALE_SECONDS)
    with session_scope(runtime.read_session_factory or runtime.session_factory) as session:
        rows = session.scalars(
            select(InstanceSnapshot)
            .where(InstanceSnapshot.instance != me, InstanceSnapshot.updated_at >= fresh)
            .order_by(InstanceSnapshot.instance)
        ).all()
        return [
            {
                "instance": row.instance,
                "host": row.host,
                "updated_at": row.updated_at,
                "metrics": dict(row.metrics),
                "alerts": list(row.alerts),
            }
            for row in rows
        ]


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
        cancel_pull: Callable[[str, str], object] | None = None,
        snapshot: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.runtime = runtime
        self._snapshot = snapshot
        self._published = False
        self.name = instance_name(runtime.settings)
        self.signals = Signals(conninfo(runtime.engine))
        self._active_streams = active_streams
        self._stop_stream = stop_stream
        self._local_pulls = local_pulls
        self._cancel_pull = cancel_pull
        self._task: asyncio.Task[None] | None = None
        self._mirrored = False

    async def _check_stops(self) -> None:
        ids = self._active_streams()
        if not ids:
            return
        for message_id in await to_thread.run_sync(_claim_stops, self.runtime, ids):
            log.info("reply stopped on request of another instance")
            self._stop_stream(message_id)

    async def _check_pull_cancels(self, jobs: list[dict[str, Any]]) -> bool:
        running = {pull_key(self.name, j["url"], j["name"]): j for j in jobs if j.get("state") == "running"}
        if not running or self._cancel_pull is None:
            return False
        claimed = await to_thread.run_sync(_claim_pull_cancels, self.runtime, self.name)
        cancelled = False
        for key in claimed:
            job = running.get(key)
            if job is not None:
                log.info("pull of %s cancelled on request of another instance", job["name"])
                with contextlib.suppress(Exception):  # it may have ended meanwhile
                    await to_thread.run_sync(self._cancel_pull, job["url"], job["name"])
                cancelled = True
        return cancelled

    async def _mirror(self, jobs: list[dict[str, Any]]) -> None:
        if jobs or self._mirrored:
            await to_thread.run_sync(_mirror_pulls, self.runtime, self.name, jobs)
            self._mirrored = bool(jobs)

    def publish(self, always: bool = False) -> None:
        """Write this instance's snapshot: at start (so the others notice it), then only while another
        instance is alive, so a lone instance does not write every few seconds."""
        if self._snapshot is None:
            return
        if always or others_alive(self.runtime, self.name):
            publish_snapshot(self.runtime, self.name, self._snapshot())
            self._published = True

    async def _run(self) -> None:
        poll = self.runtime.settings.stop_poll_seconds
        last_mirror = last_expire = 0.0
        last_snapshot = time.monotonic()  # published at start
        seen: int | None = None
        while True:
            seen = await self.signals.wait(poll, seen)
            now = time.monotonic()
            try:
                await self._check_stops()
                jobs = self._local_pulls()
                running = any(j.get("state") == "running" for j in jobs)
                every = PULL_MIRROR_SECONDS if running else PULL_REFRESH_SECONDS
                if await self._check_pull_cancels(jobs):
                    jobs, last_mirror = self._local_pulls(), 0.0  # show the result at once
                if now - last_mirror >= every or (self._mirrored and not jobs):
                    last_mirror = now
                    await self._mirror(jobs)
                if now - last_snapshot >= SNAPSHOT_SECONDS:
                    last_snapshot = now
                    await to_thread.run_sync(self.publish)
                if now - last_expire >= 60:
                    last_expire = now
                    await to_thread.run_sync(_expire_stops, self.runtime)
                    await to_thread.run_sync(_expire_pull_cancels, self.runtime)
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup must not end the watcher
                log.warning("multi-instance check failed", exc_info=True)

    def start(self) -> None:
        self.signals.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="modeltrain-cluster")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await aio.cancel_and_wait(task)
        await self.signals.stop()
        if self._published:
            with contextlib.suppress(Exception):
                await to_thread.run_sync(withdraw_snapshot, self.runtime, self.name)
        if self._mirrored:
            with contextlib.suppress(Exception):
                await to_thread.run_sync(_mirror_pulls, self.runtime, self.name, [])


async def start(
    runtime: Runtime,
    *,
    active_streams: Callable[[], list[uuid.UUID]],
    stop_stream: Callable[[uuid.UUID], None],
    local_pulls: Callable[[], list[dict[str, Any]]],
    cancel_pull: Callable[[str, str], object] | None = None,
    snapshot: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Lifespan hook: start this instance's watcher (``runtime.cluster``)."""
    runtime.cluster = ClusterWatcher(
        runtime,
        active_streams=active_streams,
        stop_stream=stop_stream,
        local_pulls=local_pulls,
        cancel_pull=cancel_pull,
        snapshot=snapshot,
    )
    if snapshot is not None:
        with contextlib.suppress(Exception):  # the System page can wait for the next tick
            await to_thread.run_sync(runtime.cluster.publish, True)
    runtime.cluster.start()


async def stop(runtime: Runtime) -> None:
    watcher, runtime.cluster = runtime.cluster, None
    if watcher is not None:
        await watcher.stop()
