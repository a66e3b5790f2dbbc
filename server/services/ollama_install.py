"""The Ollama runtime ModelTrain installs and updates per user, without root.

Layout under ``<data dir>/runtime/ollama/``:

* ``<version>/`` — one unpacked release (``bin/ollama`` and ``lib/ollama`` on Linux);
* ``current`` — a one-line file naming the version in use, replaced atomically (write beside, rename);
* ``.downloads/`` — partial and finished archives (a download resumes from here; removed after unpacking);
* ``.unpack-*`` — an archive being unpacked. It becomes ``<version>/`` by one rename only when it is
  complete and its ``ollama --version`` runs, so a half-unpacked runtime is never used (leftovers of an
  interrupted unpack are removed by the next install).

Discovery order (``find_ollama_binary``): ``MODELTRAIN_OLLAMA_BIN``, PATH, the standard install places, and
only then this managed runtime. An Ollama the user installed, or one already answering at the default URL,
always wins and is never touched: install and update refuse (``runtime_user_installed``).

An install or update runs in a worker thread (:class:`InstallJob`) and reports ``progress`` events, then
one ``done`` or ``error`` (``{"code", "message"}``, codes in ``ollama_releases.ERROR_CODES``); the state on
disk before the job is left intact by every failure. An update installs the new version beside the old,
switches ``current``, restarts the managed daemon and keeps the new version only if the daemon reaches
``running``; otherwise ``current`` goes back and the previous version is started again. The previous
version is removed after a successful switch. Nothing is downloaded without an administrator's request;
``MODELTRAIN_OLLAMA_UPDATE_CHECK`` only allows a daily version check (no download).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from server.errors import Conflict, DomainError, UpstreamError
from server.schemas.ollama import OllamaRuntimeRead, RuntimeCheckError
from server.services.ollama_daemon import is_loopback_url
from server.services.ollama_releases import (
    Cancelled,
    ReleaseSite,
    Speed,
    asset_names,
    disk_full,
    disk_full_error,
    find_binary,
    sha256_file,
    unpack,
    version_of_tag,
)
from server.settings import Settings

if TYPE_CHECKING:
    from server.services.ollama_daemon import OllamaDaemon

log = logging.getLogger(__name__)

#: Daemon states that end the wait after a restart: ``running`` is healthy, the others are not.
_SETTLED = ("running", "crashed", "failed", "stopped", "not_installed", "external")
#: Seconds between two progress events (the phase changes and the final values always go out).
PROGRESS_INTERVAL = 0.2
CHECK_INTERVAL = 24 * 3600.0
_SAFE_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}")
Kind = Literal["install", "update"]
Event = tuple[str, dict[str, Any]]


def parse_version_output(text: str) -> str | None:
    """``ollama version is 0.12.3`` (or ``Warning: client version is 0.12.3`` without a server)."""
    match = re.search(r"version is\s+v?([0-9A-Za-z._+-]+)", text)
    return match.group(1) if match else None


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version.split("-")[0]))


def is_newer(candidate: str | None, installed: str | None) -> bool:
    if not candidate or not installed:
        return False
    return version_key(candidate) > version_key(installed)


@dataclass(eq=False)
class InstallJob:
    """One install or update: its events (replayed to late subscribers) and its cancel switch."""

    kind: Kind
    state: Literal["running", "done", "error", "cancelled"] = "running"
    events: list[Event] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event]]] = field(default_factory=list)
    _last_progress: float = 0.0
    _last_percent: float = 0.0
    _phase: str = ""
    _finished: threading.Event = field(default_factory=threading.Event)
    latest: dict[str, Any] = field(default_factory=dict)

    def wait(self, timeout: float) -> bool:
        """Block until the job has ended (its ``done`` or ``error`` event went out)."""
        return self._finished.wait(timeout)

    def subscribe(self) -> asyncio.Queue[Event]:
        """A queue that gets every event so far, then the new ones (call on the event loop)."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        with self._lock:
            for event in self.events:
                queue.put_nowait(event)
            if self.state == "running":
                self._subscribers.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        with self._lock:
            self._subscribers = [(lp, q) for lp, q in self._subscribers if q is not queue]

    def emit(self, event: str, data: dict[str, Any]) -> None:
        with self._lock:
            if event == "progress":
                last = self.events[-1] if self.events else None
                if last is not None and last[0] == "progress" and last[1].get("phase") == data.get("phase"):
                    self.events[-1] = (event, data)  # one per phase: late subscribers need only the latest
                else:
                    self.events.append((event, data))
            else:
                self.events.append((event, data))
            subscribers = list(self._subscribers)
            if event in ("done", "error"):
                self._subscribers.clear()
                self._finished.set()
        for loop, queue in subscribers:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens any more
                loop.call_soon_threadsafe(queue.put_nowait, (event, data))

    def progress(self, phase: str, *, force: bool = False, **values: Any) -> None:
        """Report progress; within a phase an event goes out after PROGRESS_INTERVAL or one more percent,
        and ``latest`` always holds the newest values."""
        self.latest = {"phase": phase, **values}
        now = time.monotonic()
        percent = values.get("percent") or 0.0
        throttled = phase == self._phase and now - self._last_progress < PROGRESS_INTERVAL
        if throttled and not force and percent - self._last_percent < 1.0:
            return  # at most every PROGRESS_INTERVAL, or every whole percent of a fast download
        self._phase, self._last_progress, self._last_percent = phase, now, percent
        self.emit("progress", {"phase": phase, **values})


class RuntimeInstaller:
    """Installs, updates and locates the managed Ollama runtime. Thread-safe; one job at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.data_dir / "runtime" / "ollama"
        self.job: InstallJob | None = None
        self._lock = threading.Lock()
        self._checked: tuple[float, str | None] | None = None  # (monotonic time, newest version)

    # --- where things are -------------------------------------------------------------------------

    @property
    def downloads(self) -> Path:
        return self.root / ".downloads"

    def site(self) -> ReleaseSite:
        return ReleaseSite(
            self.settings.ollama_releases_url, stall_seconds=self.settings.ollama_download_stall_seconds
        )

    def current_version(self) -> str | None:
        try:
            version = (self.root / "current").read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return version if _SAFE_VERSION.fullmatch(version) else None

    def managed_binary(self) -> Path | None:
        """The managed ``ollama`` in use, or ``None`` (the daemon's last discovery candidate)."""
        version = self.current_version()
        return find_binary(self.root / version) if version else None

    def _set_current(self, version: str | None) -> None:
        pointer = self.root / "current"
        if version is None:
            pointer.unlink(missing_ok=True)
            return
        tmp = self.root / f".current-{uuid.uuid4().hex}"
        tmp.write_text(version + "\n", encoding="utf-8")
        os.replace(tmp, pointer)

    # --- status -----------------------------------------------------------------------------------

    def info(self, daemon: OllamaDaemon | None, *, check: bool, refresh: bool = True) -> OllamaRuntimeRead:
        """What is installed and where; with ``check`` (an administrator asked) the newest release and its
        size too. Without it, the newest version comes from the daily check when the setting allows it.
        ``refresh=False`` when the caller has just refreshed the daemon's status itself."""
        if daemon is not None and refresh:
            daemon.status(refresh=True)  # an Ollama that started answering meanwhile is the user's
        managed = self.managed_binary()
        user = daemon.user_binary() if daemon is not None else None
        external = daemon is not None and daemon.state == "external" and managed is None
        source: Literal["user", "managed"] | None = (
            "user" if user is not None or external else ("managed" if managed is not None else None)
        )
        installed = self.current_version() if managed is not None else None
        read = OllamaRuntimeRead(
            source=source,
            path=str(user if source == "user" and user else managed) if source else None,
            installed_version=installed,
            installing=self.job is not None and self.job.state == "running",
        )
        latest: str | None = None
        if check:
            try:
                site = self.site()
                names = site.assets_for(asset_names())
                release = site.latest(names)
                latest = version_of_tag(release.tag) if release.tag else None
                sizes = list(release.assets.values())
                read.asset = names[0]
                read.size = (
                    sum(s for s in sizes if s is not None) if all(s is not None for s in sizes) else None
                )
                self._checked = (time.monotonic(), latest)
            except DomainError as exc:
                read.check_error = RuntimeCheckError(code=exc.code, message=exc.message)
        else:
            latest = self._daily_check()
        read.latest_version = latest
        read.update_available = source == "managed" and is_newer(latest, installed)
        return read

    def _daily_check(self) -> str | None:
        if self._checked is not None and time.monotonic() - self._checked[0] < CHECK_INTERVAL:
            return self._checked[1]
        if not self.settings.ollama_update_check or self.current_version() is None:
            return None
        latest: str | None = None
        try:
            site = ReleaseSite(self.settings.ollama_releases_url, timeout=5.0)
            release = site.latest(site.assets_for(asset_names())[:1])
            latest = version_of_tag(release.tag) if release.tag else None
        except DomainError as exc:
            log.info("Ollama update check: %s", exc.message)
        self._checked = (time.monotonic(), latest)
        return latest

    # --- jobs -------------------------------------------------------------------------------------

    def start(self, kind: Kind, daemon: OllamaDaemon) -> InstallJob:
        """Check that the job may run, then run it in a worker thread. Raises ``runtime_busy``,
        ``runtime_user_installed``, ``runtime_not_installed`` (update without a managed runtime),
        ``ollama_not_local`` or ``runtime_unsupported`` before anything is downloaded."""
        daemon.status(refresh=True)
        with self._lock:
            if self.job is not None and self.job.state == "running":
                raise Conflict("an Ollama install or update is already running", code="runtime_busy")
            if daemon.user_binary() is not None or (
                daemon.state == "external" and self.managed_binary() is None
            ):
                raise Conflict(
                    "an Ollama installed outside ModelTrain is in use; ModelTrain leaves it alone",
                    code="runtime_user_installed",
                )
            if kind == "update" and self.managed_binary() is None:
                raise Conflict("ModelTrain has not installed Ollama yet", code="runtime_not_installed")
            if not is_loopback_url(daemon.url):
                raise Conflict(
                    f"the default Ollama URL {daemon.url} is not on this machine", code="ollama_not_local"
                )
            asset_names()  # runtime_unsupported on an OS/CPU without a build
            job = InstallJob(kind=kind)
            self.job = job
        threading.Thread(target=self._run, args=(job, daemon), name=f"ollama-{kind}", daemon=True).start()
        return job

    def cancel(self) -> InstallJob | None:
        job = self.job
        if job is None or job.state != "running":
            return None
        job.cancel.set()
        return job

    def _run(self, job: InstallJob, daemon: OllamaDaemon) -> None:
        try:
            result = self._install(job, daemon)
        except DomainError as exc:
            job.state = "cancelled" if isinstance(exc, Cancelled) else "error"
            log.warning("Ollama %s failed: %s", job.kind, exc.message)
            job.emit("error", {"code": exc.code, "message": exc.message})
        except OSError as exc:
            job.state = "error"
            error = disk_full_error(self.root) if disk_full(exc) else None
            code, message = (error.code, error.message) if error else ("runtime_io_error", str(exc))
            log.warning("Ollama %s failed: %s", job.kind, message)
            job.emit("error", {"code": code, "message": message})
        except Exception as exc:  # the job must end with an event whatever happened
            log.exception("Ollama %s failed", job.kind)
            job.state = "error"
            job.emit("error", {"code": "runtime_failed", "message": str(exc)})
        else:
            job.state = "done"
            log.info("Ollama %s done: version %s", job.kind, result["version"])
            job.emit("done", result)

    def _install(self, job: InstallJob, daemon: OllamaDaemon) -> dict[str, Any]:
        site = self.site()
        names = site.assets_for(asset_names())
        job.progress("resolving", force=True)
        release = site.latest(names)
        sums = site.checksums(release.tag)
        previous = self.current_version() if self.managed_binary() is not None else None
        if release.tag and previous == version_of_tag(release.tag):
            return {"version": previous, "path": str(self.managed_binary()), "changed": False}
        sizes = list(release.assets.values())
        total = sum(s for s in sizes if s is not None) if all(s is not None for s in sizes) else None
        self.root.mkdir(parents=True, exist_ok=True)
        archives = self._download(job, site, release.tag or "latest", names, total, sums)
        version = self._unpack(job, archives, release.tag, previous)
        if version == previous:  # a local ``latest`` folder without a tag held the version in use
            return {"version": version, "path": str(self.managed_binary()), "changed": False}
        job.progress("starting", force=True, version=version)
        self._set_current(version)
        if self._healthy(daemon):
            if previous and previous != version:
                shutil.rmtree(self.root / previous, ignore_errors=True)
            return {"version": version, "path": str(self.managed_binary()), "changed": True}
        message = f"Ollama {version} did not start: {daemon.status().last_error or daemon.state}"
        self._set_current(previous)
        shutil.rmtree(self.root / version, ignore_errors=True)
        if previous:
            self._healthy(daemon)  # the previous version again
        else:
            daemon.stop()
        raise UpstreamError(message, code="runtime_start_failed")

    def _download(
        self,
        job: InstallJob,
        site: ReleaseSite,
        tag: str,
        names: list[str],
        total: int | None,
        sums: dict[str, str],
    ) -> list[tuple[str, Path]]:
        archives: list[tuple[str, Path]] = []
        offset = 0
        speed = Speed()
        for name in names:
            target = self.downloads / f"{tag}-{name}"

            def report(done: int, size: int | None, name: str = name, offset: int = offset) -> None:
                completed = offset + done
                overall = total if total is not None else size
                percent = round(100 * completed / overall, 1) if overall else None
                job.progress(
                    "downloading",
                    force=done == size,
                    asset=name,
                    completed=completed,
                    total=overall,
                    percent=percent,
                    bytes_per_s=speed.update(completed),
                )

            site.download(None if tag == "latest" else tag, name, target, progress=report, cancel=job.cancel)
            offset += target.stat().st_size
            job.progress("verifying", force=True, asset=name)
            expected = sums.get(name)
            if expected is None:
                raise UpstreamError(
                    f"{name} is not in the release's checksum list", code="runtime_checksum_mismatch"
                )
            if sha256_file(target) != expected:
                target.unlink(missing_ok=True)  # the next attempt downloads it again from the start
                raise UpstreamError(
                    f"the SHA-256 of {name} does not match the release's checksum list",
                    code="runtime_checksum_mismatch",
                )
            archives.append((name, target))
        return archives

    def _unpack(
        self, job: InstallJob, archives: list[tuple[str, Path]], tag: str | None, previous: str | None
    ) -> str:
        for stale in self.root.glob(".unpack-*"):
            shutil.rmtree(stale, ignore_errors=True)
        job.progress("unpacking", force=True)
        tmp = self.root / f".unpack-{uuid.uuid4().hex}"
        try:
            for name, archive in archives:
                if job.cancel.is_set():
                    raise Cancelled("the install was cancelled")
                unpack(archive, name, tmp)
            binary = find_binary(tmp)
            if binary is None:
                raise UpstreamError("the archive holds no ollama executable", code="runtime_broken")
            found = self._run_version(binary)
            version = version_of_tag(tag) if tag else found
            if tag and found and found != version:
                log.warning("release %s holds an ollama that reports version %s", tag, found)
            if not version or not _SAFE_VERSION.fullmatch(version):
                raise UpstreamError(f"cannot tell the version of {binary}", code="runtime_broken")
            final = self.root / version
            if version == previous:
                shutil.rmtree(tmp)  # the version in use stays as it is
            else:
                if final.exists():  # an earlier copy of this version that is not in use
                    shutil.rmtree(final)
                os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(self.downloads, ignore_errors=True)  # this release's archives and any older partials
        return version

    @staticmethod
    def _run_version(binary: Path) -> str | None:
        try:
            done = subprocess.run(
                [str(binary), "--version"],
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UpstreamError(f"{binary} --version did not run: {exc}", code="runtime_broken") from exc
        return parse_version_output(done.stdout + "\n" + done.stderr)

    def _healthy(self, daemon: OllamaDaemon) -> bool:
        """(Re)start the managed daemon on the current runtime; True once it answers (its readiness)."""
        try:
            daemon.stop()
            daemon.start()
        except DomainError as exc:
            log.warning("the managed Ollama did not start: %s", exc.message)
            return False
        daemon.wait_for(_SETTLED, self.settings.ollama_start_timeout + 5)
        return daemon.state == "running"
