"""Supervise a local ``ollama serve``: find it, adopt an external one, start, watch, restart, stop.

Thread-based and free of FastAPI imports, so the server lifespan and the desktop shell (which runs the
server in a thread) can both use it. One :class:`OllamaDaemon` supervises the *default* Ollama URL
only; other Ollama hosts are merely probed (:func:`probe`).

Rules (docs/protocols.md, §C and §D.5):

* probe ``GET /`` first; if an Ollama already answers, adopt it as ``external`` and never kill it;
* spawn ``<bin> serve`` with ``OLLAMA_HOST=127.0.0.1:<port>`` (never ``0.0.0.0``), never pass
  ``OLLAMA_ORIGINS``, optionally ``OLLAMA_MODELS``; stdout/stderr go to a size-rotated log file;
* the child gets its own session / process group, so stopping it (SIGTERM, then SIGKILL after a
  grace period) also ends its runner subprocesses;
* a PID file (pid + process start time + command line) lets the next start end a stale child of ours
  and never touches an unrelated process that reused the PID.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import logging
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

from server.errors import Conflict, Unavailable
from server.schemas.ollama import OllamaStatusRead
from server.settings import Settings

log = logging.getLogger(__name__)

STATES = ("not_installed", "stopped", "starting", "running", "external", "crashed", "failed")
LIVENESS_TEXT = "Ollama is running"
#: Poll interval of the supervisor: a crash is noticed within this time (well under 2 s).
POLL_INTERVAL = 0.1
#: Readiness polling: one short ``GET /`` attempt every READY_INTERVAL seconds.
READY_INTERVAL = 0.1
READY_ATTEMPT_TIMEOUT = 1.0
#: A child that stayed up this long resets the consecutive-failure counter.
STABLE_AFTER = 30.0
#: Longest wait for a killed process group to end.
KILL_WAIT = 5.0
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# --------------------------------------------------------------------------------------------------
# Binary discovery
# --------------------------------------------------------------------------------------------------


def standard_locations() -> list[Path]:
    """Where the official installers put ``ollama`` (docs/protocols.md, §C.7), for this OS."""
    home = Path.home()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return [Path(local) / "Programs" / "Ollama" / "ollama.exe"]
    if sys.platform == "darwin":
        return [
            Path("/Applications/Ollama.app/Contents/Resources/ollama"),
            home / "Applications" / "Ollama.app" / "Contents" / "Resources" / "ollama",
            Path("/opt/homebrew/bin/ollama"),
            Path("/usr/local/bin/ollama"),
        ]
    return [Path("/usr/local/bin/ollama"), Path("/usr/bin/ollama"), Path("/bin/ollama")]


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_ollama_binary(
    configured: Path | None, *, extra_locations: Iterable[Path] | None = None, managed: Path | None = None
) -> Path | None:
    """``MODELTRAIN_OLLAMA_BIN`` if set (and only it), else PATH, else the standard install locations, and
    last the runtime ModelTrain installed itself (``managed``, services/ollama_install.py): an ``ollama``
    the user installed always wins."""
    if configured is not None:
        path = Path(configured).expanduser()
        return path if _is_executable(path) else None
    found = shutil.which("ollama")
    if found:
        return Path(found)
    for candidate in standard_locations() if extra_locations is None else extra_locations:
        if _is_executable(candidate):
            return candidate
    if managed is not None and _is_executable(managed):
        return managed
    return None


# --------------------------------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def ssl_context() -> ssl.SSLContext:
    """One verified TLS context for every client: building one costs ~150 ms (CA bundle load)."""
    return httpx.create_ssl_context()


def http_client(timeout: float | httpx.Timeout) -> httpx.Client:
    """A client for talking to Ollama: no redirects, no proxy/netrc from the environment."""
    return httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, verify=ssl_context())


def async_http_client(timeout: float | httpx.Timeout) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False, verify=ssl_context())


def probe(url: str, timeout: float = READY_ATTEMPT_TIMEOUT) -> bool:
    """True when ``GET <url>/`` answers 200 with "Ollama is running"."""
    try:
        with http_client(timeout) as client:
            r = client.get(url.rstrip("/") + "/")
        return r.status_code == 200 and r.text.startswith(LIVENESS_TEXT)
    except (httpx.HTTPError, OSError):
        return False


def fetch_version(url: str, timeout: float = READY_ATTEMPT_TIMEOUT) -> str | None:
    try:
        with http_client(timeout) as client:
            r = client.get(url.rstrip("/") + "/api/version")
        if r.status_code == 200:
            version = r.json().get("version")
            return str(version)[:64] if version else None
    except (httpx.HTTPError, OSError, ValueError, AttributeError):
        pass
    return None


def url_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in _LOOPBACK_NAMES or host.startswith("127.")


def bind_address(url: str) -> str:
    """The ``OLLAMA_HOST`` for a managed daemon: always a loopback address, never ``0.0.0.0``."""
    host = (urlsplit(url).hostname or "").lower()
    port = url_port(url)
    if host == "::1":
        return f"[::1]:{port}"
    if host.startswith("127."):
        return f"{host}:{port}"
    return f"127.0.0.1:{port}"


# --------------------------------------------------------------------------------------------------
# Rotated log capture
# --------------------------------------------------------------------------------------------------


class RotatingLog:
    """Append bytes to ``path``; when it exceeds ``max_bytes`` shift ``path`` -> ``path.1`` -> ... ."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fh: io.BufferedWriter | None = None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - closed in close()

    def _rotate(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0 and self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        elif self.path.exists():
            self.path.unlink()

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._fh is None:
                self._open()
            assert self._fh is not None
            if self._fh.tell() + len(data) > self.max_bytes and self._fh.tell() > 0:
                self._rotate()
                self._open()
                assert self._fh is not None
            self._fh.write(data)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def tail(self, n: int) -> list[str]:
        """The last ``n`` lines (current file, then the previous rotation), ANSI/control chars removed."""
        lines: deque[str] = deque(maxlen=n)
        files = [self.path.with_name(f"{self.path.name}.1"), self.path]
        for file in files:
            try:
                with open(file, "rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    size = fh.tell()
                    # Read at most ~ 400 bytes per requested line from the end; enough for log lines.
                    fh.seek(max(0, size - max(64 * 1024, n * 400)))
                    data = fh.read()
            except FileNotFoundError:
                continue
            text = data.decode("utf-8", errors="replace")
            for line in text.splitlines():
                lines.append(_CONTROL.sub("", _ANSI.sub("", line)))
        return list(lines)


def _pump(stream, sink: RotatingLog) -> None:
    try:
        for chunk in iter(lambda: stream.readline(65536), b""):
            sink.write(chunk)
    except (OSError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError):
            stream.close()


# --------------------------------------------------------------------------------------------------
# PID file and process-group handling
# --------------------------------------------------------------------------------------------------


def write_pid_file(path: Path, pid: int, binary: Path | str) -> None:
    """Record ``pid`` with its start time, binary and command line so a later start can recognise it."""
    try:
        proc = psutil.Process(pid)
        record = {
            "pid": pid,
            "create_time": proc.create_time(),
            "binary": str(binary),
            "cmdline": proc.cmdline(),
        }
    except psutil.Error:
        record = {"pid": pid, "create_time": None, "binary": str(binary), "cmdline": []}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def _stale_process(path: Path) -> psutil.Process | None:
    """The process named by the PID file, if it is still the very process we started."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        pid = int(record["pid"])
        created = float(record["create_time"])
        binary_name = Path(str(record["binary"])).name
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) > 0.05:
            return None  # the PID now belongs to another process
        cmdline = proc.cmdline()
        if "serve" not in cmdline or not any(Path(arg).name == binary_name for arg in cmdline):
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running. Zombies (ended, not yet reaped by their new
    parent) do not count: nothing of them runs any more."""
    if os.name == "nt":
        return False
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
        except (OSError, psutil.Error):
            continue
    return False


def _kill_group(pid: int, pgid: int) -> None:
    """SIGKILL the group, then wait (up to KILL_WAIT s) until none of it is still running: a killed
    process takes a moment to end, and the callers report the group as gone."""
    _signal_group(pid, pgid, signal.SIGKILL)
    _wait_until(lambda: not _group_alive(pgid), KILL_WAIT)


def _signal_group(pid: int, pgid: int | None, sig: int) -> None:
    try:
        if os.name != "nt" and pgid:
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def terminate_process_tree(proc: psutil.Process, grace: float) -> None:
    """SIGTERM the process's group (or the process and its children on Windows), SIGKILL after grace."""
    pid = proc.pid
    if os.name == "nt":
        victims = [proc, *proc.children(recursive=True)]
        for p in victims:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(victims, timeout=grace)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        return
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    own = os.getpgid(0)
    target = pgid if pgid != own else None  # never signal our own group
    _signal_group(pid, target, signal.SIGTERM)
    gone = _wait_until(lambda: _gone(proc), grace)
    if target is not None and _group_alive(target):
        _kill_group(pid, target)
    elif not gone:
        _signal_group(pid, None, signal.SIGKILL)


# --------------------------------------------------------------------------------------------------
# The supervisor
# --------------------------------------------------------------------------------------------------


_live: weakref.WeakSet[OllamaDaemon] = weakref.WeakSet()
_atexit_registered = False


def _stop_all_at_exit() -> None:
    for daemon in list(_live):
        with contextlib.suppress(Exception):  # best effort at interpreter exit; logging may be gone
            daemon.close()


class OllamaDaemon:
    """Supervisor of the local default Ollama. All public methods are thread-safe and blocking."""

    def __init__(
        self,
        settings: Settings,
        *,
        url: str | None = None,
        binary_locations: Iterable[Path] | None = None,
        stable_after: float = STABLE_AFTER,
        managed_binary: Callable[[], Path | None] | None = None,
    ) -> None:
        self.settings = settings
        #: The managed runtime's ``ollama`` (RuntimeInstaller.managed_binary), the last discovery candidate.
        self._managed_binary = managed_binary
        self.url = (url or settings.default_ollama_url).rstrip("/")
        self.port = url_port(self.url)
        self._binary_locations = list(binary_locations) if binary_locations is not None else None
        self._stable_after = stable_after
        self.pid_file = settings.data_dir / "ollama.pid"
        self.log_file = settings.resolved_log_dir / "ollama.log"
        self._log = RotatingLog(self.log_file, settings.ollama_log_max_bytes, settings.ollama_log_backups)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._state = "stopped"
        self._managed = False
        self._version: str | None = None
        self._binary: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pgid: int | None = None
        self._started_at: float | None = None  # monotonic time the current child became ready
        self._restart_count = 0
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._generation = 0  # bumps on every spawn; lets waiters tell one child from the next

    # ---- public API ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def status(self, *, refresh: bool = False) -> OllamaStatusRead:
        """A snapshot. With ``refresh``, an unmanaged state is re-probed (an external Ollama may have
        appeared or gone) and the version of a running/external server is re-read."""
        if refresh:
            self._refresh()
        with self._lock:
            uptime = None
            if self._state == "running" and self._started_at is not None:
                uptime = round(time.monotonic() - self._started_at, 3)
            return OllamaStatusRead(
                state=self._state,
                url=self.url,
                managed=self._managed,
                version=self._version,
                pid=self._proc.pid if self._proc is not None and self._managed else None,
                uptime_s=uptime,
                restart_count=self._restart_count,
                last_error=self._last_error,
                binary=str(self._binary) if self._binary else None,
                log_file=str(self.log_file),
                autostart=self.settings.ollama_autostart,
            )

    def user_binary(self) -> Path | None:
        """An ``ollama`` the user installed (MODELTRAIN_OLLAMA_BIN, PATH, standard places), if any."""
        return find_ollama_binary(self.settings.ollama_bin, extra_locations=self._binary_locations)

    def _find_binary(self) -> Path | None:
        managed = self._managed_binary() if self._managed_binary is not None else None
        return find_ollama_binary(
            self.settings.ollama_bin, extra_locations=self._binary_locations, managed=managed
        )

    def start(self) -> OllamaStatusRead:
        """Adopt a running Ollama or spawn one. Returns at once; readiness continues in the background
        (use :meth:`wait_for`). Raises :class:`Conflict`/:class:`Unavailable` when it cannot start."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self.status()
            self._stop.clear()
            self._last_error = None
            self._restart_count = 0
        if not is_loopback_url(self.url):
            raise Conflict(
                f"the default Ollama URL {self.url} is not on this machine; "
                "ModelTrain only starts a local Ollama",
                code="ollama_not_local",
            )
        self._cleanup_stale()
        if probe(self.url):
            self._set(state="external", managed=False, version=fetch_version(self.url))
            log.info("an Ollama server already answers at %s; using it as external", self.url)
            return self.status()
        binary = self._find_binary()
        with self._lock:
            self._binary = binary
        if binary is None:
            where = (
                f"MODELTRAIN_OLLAMA_BIN={self.settings.ollama_bin} is not an executable file"
                if self.settings.ollama_bin
                else "no `ollama` executable on PATH or in the standard install locations"
            )
            self._set(state="not_installed", managed=False, last_error=where)
            raise Unavailable(f"Ollama is not installed: {where}", code="ollama_not_installed")
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self.status()
            self._state = "starting"
            self._managed = True
            self._changed.notify_all()
            self._thread = threading.Thread(target=self._supervise, name="ollama-supervisor", daemon=True)
            self._thread.start()
        self._register_atexit()
        return self.status()

    def stop(self) -> OllamaStatusRead:
        """Stop a managed daemon (whole process group, SIGTERM then SIGKILL). An external one is left
        alone: only our bookkeeping changes."""
        with self._lock:
            if self._state == "external":
                return self.status()  # not ours: never stopped or killed by us
            thread = self._thread
            self._stop.set()
            self._changed.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.settings.ollama_stop_grace + 10)
        with self._lock:
            self._thread = None
            if self._state not in ("not_installed",):
                self._state = "stopped"
            self._managed = False
            self._version = None if self._state == "stopped" else self._version
            self._started_at = None
            self._changed.notify_all()
        return self.status()

    def restart(self) -> OllamaStatusRead:
        with self._lock:
            if self._state == "external":
                raise Conflict(
                    "the Ollama at this URL was not started by ModelTrain; restart it where it runs",
                    code="ollama_external",
                )
        self.stop()
        return self.start()

    def close(self) -> None:
        """App exit: stop a managed child, never an external one."""
        with self._lock:
            managed = self._thread is not None
        if managed:
            self.stop()
        self._log.close()

    def wait_for(self, states: Iterable[str], timeout: float) -> bool:
        """Block until the state is one of ``states`` (bounded)."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._state not in wanted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.5))
            return True

    def tail_logs(self, n: int) -> list[str]:
        return self._log.tail(n)

    # ---- internals ----------------------------------------------------------------------------

    def _set(self, **values: Any) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self, f"_{key}", value)
            self._changed.notify_all()

    def _register_atexit(self) -> None:
        global _atexit_registered
        _live.add(self)
        if not _atexit_registered:
            atexit.register(_stop_all_at_exit)
            _atexit_registered = True

    def _refresh(self) -> None:
        with self._lock:
            state = self._state
        if state in ("running", "starting", "crashed", "failed"):
            if state == "running" and self._version is None:
                self._set(version=fetch_version(self.url))
            return
        up = probe(self.url, timeout=0.5)
        with self._lock:
            if self._state not in ("stopped", "not_installed", "external"):
                return  # changed while we probed
        if up:
            self._set(state="external", managed=False, version=fetch_version(self.url, timeout=0.5))
            return
        binary = self._find_binary()
        self._set(binary=binary, state="stopped" if binary else "not_installed", version=None)

    def _cleanup_stale(self) -> None:
        """End a child of a previous run of ours (recorded in the PID file), then remove the file."""
        if not self.pid_file.exists():
            return
        proc = _stale_process(self.pid_file)
        if proc is not None:
            log.warning("ending a stale Ollama (pid %s) left by a previous run", proc.pid)
            terminate_process_tree(proc, self.settings.ollama_stop_grace)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if env.pop("OLLAMA_ORIGINS", None) is not None:
            log.info("not passing OLLAMA_ORIGINS to the managed Ollama")
        env["OLLAMA_HOST"] = bind_address(self.url)
        if self.settings.ollama_models_dir:
            models = Path(self.settings.ollama_models_dir).expanduser()
            models.mkdir(parents=True, exist_ok=True)
            env["OLLAMA_MODELS"] = str(models)
        return env

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert self._binary is not None
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(
                subprocess, "CREATE_NO_WINDOW", 0
            )
        else:
            kwargs["start_new_session"] = True
        self._log.write(
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} ModelTrain starts {self._binary} serve "
            f"(OLLAMA_HOST={bind_address(self.url)}) ---\n".encode()
        )
        proc = subprocess.Popen(
            [str(self._binary), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._env(),
            close_fds=True,
            **kwargs,
        )
        threading.Thread(target=_pump, args=(proc.stdout, self._log), name="ollama-log", daemon=True).start()
        try:
            write_pid_file(self.pid_file, proc.pid, self._binary)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.pid_file, exc)
        return proc

    def _terminate_current(self) -> None:
        proc, pgid = self._proc, self._pgid
        if proc is None:
            return
        if os.name == "nt":
            with contextlib.suppress(psutil.Error):
                terminate_process_tree(psutil.Process(proc.pid), self.settings.ollama_stop_grace)
        else:
            _signal_group(proc.pid, pgid, signal.SIGTERM)
            try:
                proc.wait(self.settings.ollama_stop_grace)
            except subprocess.TimeoutExpired:
                log.warning("Ollama did not stop within %g s; killing it", self.settings.ollama_stop_grace)
            # Runners (or a leader that ignored SIGTERM) left in the group are killed.
            if pgid and _group_alive(pgid):
                _kill_group(proc.pid, pgid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        self._remove_pid_file(proc.pid)

    def _remove_pid_file(self, pid: int) -> None:
        try:
            record = json.loads(self.pid_file.read_text(encoding="utf-8"))
            if int(record.get("pid", -1)) == pid:
                self.pid_file.unlink()
        except (OSError, ValueError):
            pass

    def _describe_exit(self, code: int) -> str:
        if code < 0:
            try:
                return f"Ollama was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"Ollama was killed by signal {-code}"
        return f"Ollama exited with code {code}"

    def _supervise(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    proc = self._spawn()
                except OSError as exc:
                    self._set(state="failed", managed=False, last_error=f"cannot start {self._binary}: {exc}")
                    return
                with self._lock:
                    self._proc = proc
                    self._pgid = proc.pid if os.name != "nt" else None
                    self._generation += 1
                    self._state = "starting"
                    self._started_at = None
                    self._changed.notify_all()
                outcome = self._await_ready(proc)
                if outcome == "stop":
                    break
                if outcome == "ready":
                    self._set(state="running", started_at=time.monotonic(), version=fetch_version(self.url))
                    log.info("Ollama running at %s (pid %s)", self.url, proc.pid)
                    outcome = self._watch(proc)
                    if outcome == "stop":
                        break
                    stable = (time.monotonic() - (self._started_at or time.monotonic())) >= self._stable_after
                    if stable:
                        failures = 0
                    message = self._describe_exit(proc.returncode)
                elif outcome == "timeout":
                    timeout = self.settings.ollama_start_timeout
                    message = f"Ollama did not answer at {self.url} within {timeout:.0f} s"
                    self._terminate_current()
                else:  # exited while starting
                    code = proc.returncode
                    if code == 1:
                        # `ollama serve` exits 1 right away when its port is taken (§C.3).
                        self._kill_leftovers()
                        if probe(self.url):
                            self._set(
                                state="external",
                                managed=False,
                                version=fetch_version(self.url),
                                last_error=None,
                                proc=None,
                            )
                            log.info("another Ollama took %s first; using it as external", self.url)
                            return
                        message = (
                            f"Ollama exited with code 1 at start: probable port conflict, port {self.port} "
                            f"on 127.0.0.1 is already in use by another program "
                            f"(change MODELTRAIN_OLLAMA_URL or stop that program)"
                        )
                        self._set(state="failed", managed=False, last_error=message, started_at=None)
                        log.error("%s", message)
                        return
                    message = self._describe_exit(code) + " while starting"
                self._kill_leftovers()
                failures += 1
                with self._lock:
                    self._last_error = message
                    self._started_at = None
                log.warning("%s", message)
                if failures > self.settings.ollama_max_restarts:
                    self._set(
                        state="failed",
                        managed=False,
                        last_error=f"{message}; gave up after {failures - 1} restarts",
                    )
                    log.error("Ollama keeps failing; gave up after %d restarts", failures - 1)
                    return
                delay = min(
                    self.settings.ollama_restart_backoff * (2 ** (failures - 1)),
                    self.settings.ollama_restart_backoff_max,
                )
                self._set(state="crashed")
                if self._stop.wait(delay):
                    break
                with self._lock:
                    self._restart_count += 1
        finally:
            with self._lock:
                stopping = self._stop.is_set()
            if stopping:
                self._terminate_current()
                self._set(state="stopped", managed=False, proc=None, started_at=None, version=None)
            elif self._proc is not None:
                self._remove_pid_file(self._proc.pid)

    def _kill_leftovers(self) -> None:
        """After the leader died, kill whatever remains of its process group (orphaned runners)."""
        pgid = self._pgid
        if pgid and _group_alive(pgid):
            _kill_group(pgid, pgid)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(2)
            self._remove_pid_file(self._proc.pid)

    def _await_ready(self, proc: subprocess.Popen[bytes]) -> str:
        deadline = time.monotonic() + self.settings.ollama_start_timeout
        while True:
            if self._stop.is_set():
                return "stop"
            if proc.poll() is not None:
                return "exited"
            if probe(self.url, timeout=READY_ATTEMPT_TIMEOUT):
                # The answer could come from someone else only if our child lost the port; it is alive.
                return "ready" if proc.poll() is None else "exited"
            if time.monotonic() >= deadline:
                return "timeout"
            if self._stop.wait(READY_INTERVAL):
                return "stop"

    def _watch(self, proc: subprocess.Popen[bytes]) -> str:
        while True:
            if proc.poll() is not None:
                return "exited"
            if self._stop.wait(POLL_INTERVAL):
                return "stop"
