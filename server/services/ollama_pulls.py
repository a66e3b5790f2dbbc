"""Background pulls of Ollama models.

Pulls are asyncio tasks owned by a :class:`PullManager` (``runtime.ollama_pulls``): several at once,
cancellable, independent of the HTTP request that started them, with progress snapshots a client can
re-attach to, a free-disk check before each layer downloads, and stall reports.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil

from server.errors import DomainError, InsufficientStorage, InvalidInput, NotFound, Unavailable, UpstreamError
from server.services.ollama_admin import (
    OllamaTarget,
    canonical_name,
    check_registry_name,
    clean_text,
    upstream_message,
)
from server.services.ollama_daemon import async_http_client, is_loopback_url
from server.settings import Settings

log = logging.getLogger(__name__)


def default_free_space(path: Path) -> int:
    return psutil.disk_usage(str(path)).free


def models_dir_for(settings: Settings, url: str) -> Path | None:
    """The directory whose free space a pull into ``url`` consumes: local Ollama only."""
    if not is_loopback_url(url):
        return None
    if settings.ollama_models_dir:  # MODELTRAIN_OLLAMA_MODELS_DIR, else OLLAMA_MODELS
        candidate = Path(settings.ollama_models_dir).expanduser()
    else:
        candidate = Path.home() / ".ollama" / "models"
    for path in (candidate, *candidate.parents):
        if path.exists():
            return path
    return settings.data_dir


class _PullFailed(Exception):
    def __init__(self, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail


_FINAL = ("done", "error")
#: ``(event, data)`` as sent to a subscriber: ``progress`` events, then one final ``done`` or ``error``.
PullEvent = tuple[str, dict[str, Any]]


@dataclass
class PullJob:
    key: str
    name: str
    url: str
    provider_id: uuid.UUID | None
    check_dir: Path | None
    state: str = "running"  # running | success | error | cancelled
    status: str = "starting"
    digest: str | None = None
    total: int | None = None
    completed: int | None = None
    bytes_per_s: float | None = None
    stalled: bool = False
    error: dict[str, Any] | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    finished_at: datetime | None = None
    events: int = 0
    last_change: float = field(default_factory=time.monotonic)
    last_event: PullEvent | None = None
    subscribers: set[asyncio.Queue[PullEvent]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    checkpoint: asyncio.Event = field(default_factory=asyncio.Event)
    checked: set[str] = field(default_factory=set)
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))
    started_mono: float = field(default_factory=time.monotonic)
    #: Called (in a worker thread) once the pull has ended, whatever the outcome: the audit entry.
    on_finish: Callable[[PullJob], None] | None = None

    @property
    def percent(self) -> float | None:
        if self.total and self.completed is not None:
            return round(100.0 * min(self.completed, self.total) / self.total, 2)
        return None

    @property
    def eta_s(self) -> float | None:
        if self.total and self.completed is not None and self.bytes_per_s:
            return round(max(self.total - self.completed, 0) / self.bytes_per_s, 1)
        return None

    @property
    def remaining(self) -> int:
        if self.state != "running" or not self.total:
            return 0
        return max(self.total - (self.completed or 0), 0)

    def progress(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "digest": self.digest,
            "total": self.total,
            "completed": self.completed,
            "percent": self.percent,
            "bytes_per_s": self.bytes_per_s,
            "eta_s": self.eta_s,
            "stalled": self.stalled,
        }

    def summary(self) -> dict[str, Any]:
        return {
            **self.progress(),
            "provider_id": self.provider_id,
            "url": self.url,
            "state": self.state,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "events": self.events,
        }


class PullManager:
    """Background pulls on the server's event loop. ``list``/``cancel`` may be called from threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        free_space: Callable[[Path], int] = default_free_space,
        keep_finished: int = 50,
        queue_size: int = 256,
    ) -> None:
        self.settings = settings
        self.free_space = free_space
        self.keep_finished = keep_finished
        self.queue_size = queue_size
        self._jobs: dict[str, PullJob] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- public ------------------------------------------------------------------------------

    async def start(
        self, target: OllamaTarget, name: str, *, on_finish: Callable[[PullJob], None] | None = None
    ) -> tuple[PullJob, bool]:
        """Start pulling ``name`` into ``target`` (or join the pull already running). Returns the job and
        whether it was created by this call. ``on_finish`` (a new pull only) runs when it ends."""
        check_registry_name(self.settings, name)
        self._loop = asyncio.get_running_loop()
        key = self._key(target.url, name)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state == "running":
                return job, False
            job = PullJob(
                key=key,
                name=name,
                url=target.url,
                provider_id=target.provider_id,
                check_dir=models_dir_for(self.settings, target.url),
                on_finish=on_finish,
            )
            self._jobs[key] = job
            self._prune()
        job.task = asyncio.create_task(self._run(job), name=f"ollama-pull {name}")
        log.info("pull of %s started at %s", name, target.url)
        return job, True

    async def wait_checkpoint(self, job: PullJob, timeout: float) -> None:
        """Until the first layer passed the disk check, or the pull ended (bounded by ``timeout``)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(job.checkpoint.wait(), timeout)

    def get(self, url: str, name: str) -> PullJob | None:
        with self._lock:
            return self._jobs.get(self._key(url, name))

    def subscribe(self, job: PullJob) -> asyncio.Queue[PullEvent]:
        """A queue of ``(event, data)``: the latest snapshot first, then live events until the end."""
        queue: asyncio.Queue[PullEvent] = asyncio.Queue(maxsize=self.queue_size)
        if job.last_event is not None:
            queue.put_nowait(job.last_event)
        if job.state == "running":
            job.subscribers.add(queue)
        elif job.last_event is None or job.last_event[0] not in _FINAL:
            queue.put_nowait(self._final_event(job))
        return queue

    def unsubscribe(self, job: PullJob, queue: asyncio.Queue[PullEvent]) -> None:
        job.subscribers.discard(queue)

    def list(self, url: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            self._prune()
            jobs = [j for j in self._jobs.values() if url is None or j.url == url]
        jobs.sort(key=lambda j: j.started_at, reverse=True)
        return [j.summary() for j in jobs]

    def cancel(self, url: str, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """Cancel a running pull; blocks until it ended. Call from a worker thread, not the loop."""
        job = self.get(url, name)
        if job is None or job.state != "running" or job.task is None or self._loop is None:
            raise NotFound("no pull of this model is running", code="pull_not_found")
        future = asyncio.run_coroutine_threadsafe(self._cancel(job), self._loop)
        with contextlib.suppress(concurrent.futures.TimeoutError):
            future.result(timeout)
        return job.summary()

    async def aclose(self) -> None:
        with self._lock:
            tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ---- internals ---------------------------------------------------------------------------

    @staticmethod
    def _key(url: str, name: str) -> str:
        return f"{url.rstrip('/').lower()}|{canonical_name(name)}"

    def _prune(self) -> None:
        finished = [j for j in self._jobs.values() if j.state != "running"]
        finished.sort(key=lambda j: j.finished_at or j.started_at)
        for job in finished[: max(0, len(finished) - self.keep_finished)]:
            self._jobs.pop(job.key, None)

    async def _cancel(self, job: PullJob) -> None:
        if job.task is not None and not job.task.done():
            job.task.cancel()
            await asyncio.gather(job.task, return_exceptions=True)

    def _emit(self, job: PullJob, event: str, data: dict[str, Any]) -> None:
        job.events += 1
        job.last_event = (event, data)
        for queue in list(job.subscribers):
            if queue.full():  # a slow reader loses intermediate progress, never the final event
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait((event, data))

    def _final_event(self, job: PullJob) -> PullEvent:
        if job.state == "success":
            return "done", {
                "name": job.name,
                "status": "success",
                "elapsed_s": round(time.monotonic() - job.started_mono, 3),
            }
        error = job.error or {"code": "pull_failed", "message": "the pull failed"}
        return "error", {"name": job.name, **error}

    def _finish(self, job: PullJob, state: str, error: dict[str, Any] | None = None) -> None:
        job.state = state
        job.error = error
        job.finished_at = datetime.now(timezone.utc)
        job.stalled = False
        self._emit(job, *self._final_event(job))
        job.subscribers.clear()
        job.checkpoint.set()

    def _on_line(self, job: PullJob, line: dict[str, Any]) -> None:
        now = time.monotonic()
        status = clean_text(line.get("status") or "", 120)
        digest = line.get("digest") if isinstance(line.get("digest"), str) else None
        total = line.get("total") if isinstance(line.get("total"), int) else None
        completed = line.get("completed") if isinstance(line.get("completed"), int) else None
        if digest is None:
            changed = status != job.status
            job.digest, job.total, job.completed, job.bytes_per_s = None, None, None, None
            job.samples.clear()
        else:
            completed = completed or 0
            new_layer = digest != job.digest
            changed = new_layer or status != job.status or completed > (job.completed or 0)
            if new_layer:
                job.samples.clear()
            job.digest, job.total, job.completed = digest, total, completed
            job.samples.append((now, completed))
            job.bytes_per_s = self._rate(job.samples)
            if digest not in job.checked and total:
                job.checked.add(digest)
                self._check_disk(job, total - completed)
                job.checkpoint.set()
        job.status = status
        if changed:
            job.last_change = now
            job.stalled = False
        self._emit(job, "progress", job.progress())

    @staticmethod
    def _rate(samples: deque[tuple[float, int]]) -> float | None:
        if len(samples) < 2:
            return None
        latest_t, latest_c = samples[-1]
        first_t, first_c = samples[0]
        for t, c in samples:  # a window of the last ~5 s
            if latest_t - t <= 5.0:
                first_t, first_c = t, c
                break
        if latest_t - first_t < 0.05:
            return None
        return round((latest_c - first_c) / (latest_t - first_t), 1)

    def _check_disk(self, job: PullJob, remaining: int) -> None:
        if job.check_dir is None or remaining <= 0:
            return
        with self._lock:
            others = sum(
                j.remaining for j in self._jobs.values() if j is not job and j.check_dir == job.check_dir
            )
        needed = remaining + others + self.settings.ollama_disk_reserve_bytes
        free = self.free_space(job.check_dir)
        if free < needed:
            raise _PullFailed(
                "disk_full",
                f"not enough free disk space for {job.name}: {needed} bytes needed, {free} free",
                {"needed_bytes": needed, "free_bytes": free},
            )

    async def _watch_stall(self, job: PullJob) -> None:
        limit = self.settings.ollama_pull_stall_seconds
        interval = min(1.0, limit / 4)
        while job.state == "running":
            await asyncio.sleep(interval)
            if job.state == "running" and not job.stalled and time.monotonic() - job.last_change >= limit:
                job.stalled = True
                log.warning("pull of %s stalled (no progress for %.0f s)", job.name, limit)
                self._emit(job, "progress", job.progress())

    async def _run(self, job: PullJob) -> None:
        watchdog = asyncio.create_task(self._watch_stall(job))
        timeout = httpx.Timeout(10.0, read=900.0)
        try:
            async with async_http_client(timeout) as client:
                # Built from validated fields only; `insecure` is never sent.
                body = {"model": job.name, "stream": True}
                async with client.stream("POST", job.url + "/api/pull", json=body) as response:
                    if response.status_code != 200:
                        await response.aread()
                        code = "invalid_model_name" if response.status_code == 400 else "pull_failed"
                        raise _PullFailed(code, f"Ollama refused the pull: {upstream_message(response)}")
                    async for raw in response.aiter_lines():
                        if not raw.strip():
                            continue
                        try:
                            line = json.loads(raw)
                        except ValueError:
                            raise _PullFailed(
                                "upstream_protocol", "Ollama sent a malformed progress line"
                            ) from None
                        if not isinstance(line, dict):
                            raise _PullFailed("upstream_protocol", "Ollama sent a malformed progress line")
                        if line.get("error"):
                            message = clean_text(line["error"])
                            code = "model_not_found" if "file does not exist" in message else "pull_failed"
                            raise _PullFailed(code, message)
                        self._on_line(job, line)
                        if line.get("status") == "success":
                            self._finish(job, "success")
                            log.info("pull of %s finished", job.name)
                            return
            raise _PullFailed("pull_incomplete", "the pull ended before Ollama reported success")
        except asyncio.CancelledError:
            self._finish(job, "cancelled", {"code": "cancelled", "message": "the pull was cancelled"})
            log.info("pull of %s cancelled", job.name)
        except _PullFailed as exc:
            self._finish(job, "error", {"code": exc.code, "message": exc.message, "detail": exc.detail})
            log.warning("pull of %s failed: %s", job.name, exc.message)
        except httpx.TimeoutException:
            self._finish(job, "error", {"code": "ollama_timeout", "message": "Ollama stopped answering"})
        except (httpx.HTTPError, OSError):
            self._finish(
                job,
                "error",
                {"code": "ollama_unreachable", "message": f"Ollama at {job.url} is not reachable"},
            )
        finally:
            watchdog.cancel()
            job.checkpoint.set()
            if job.on_finish is not None:
                try:
                    await asyncio.shield(asyncio.to_thread(job.on_finish, job))
                except Exception:  # the hook logs its own failures; this is a safety net
                    log.warning("the end-of-pull hook of %s failed", job.name, exc_info=True)


#: HTTP errors for a pull that failed before its stream started.
PULL_ERRORS: dict[str, type[DomainError]] = {
    "disk_full": InsufficientStorage,
    "ollama_unreachable": Unavailable,
    "ollama_timeout": Unavailable,
    "model_not_found": NotFound,
    "invalid_model_name": InvalidInput,
}


def early_pull_error(job: PullJob) -> DomainError | None:
    """The error to answer instead of a stream when the pull already failed (e.g. disk full)."""
    if job.state not in ("error",) or job.error is None:
        return None
    cls = PULL_ERRORS.get(job.error["code"], UpstreamError)
    return cls(job.error["message"], code=job.error["code"], detail=job.error.get("detail"))
