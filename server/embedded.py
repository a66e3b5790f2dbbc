"""EmbeddedServer: the FastAPI app served by uvicorn in a daemon thread of a host process (the desktop).

* ``start(timeout) -> url`` binds ``host:port`` itself (port 0: a free port) unless given a socket the
  host bound beforehand, runs uvicorn in a thread and waits for the app's start-up to finish; a failure
  raises :class:`EmbeddedServerError` whose ``kind`` names the cause (``port_in_use``,
  ``database_locked``, ``disk_full``...) and whose message is one line a person can act on.
* ``stop(timeout)`` stops accepting, lets open requests finish for ``shutdown_grace_seconds`` and then
  cancels them (so an open SSE stream cannot hang shutdown), runs the app's shutdown, stops an Ollama
  we started and checkpoints the SQLite WAL.
* An optional second listener for LAN access (:class:`LanController`) serves the *same* app instance
  on the *same* event loop (so loop-bound objects of the app work on both), and can be opened and
  closed at run time. Requests are tagged with the listener they arrived on
  (``scope["modeltrain.listener"]``); the desktop token and desktop sessions count only on loopback.

The uvicorn ``Config`` gets the app object (never an import string), which also keeps PyInstaller happy.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import psutil
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from server.app import create_app
from server.db.session import sqlite_path
from server.errors import Conflict, InvalidInput
from server.http_protocol import CoalescingHttpToolsProtocol
from server.log_setup import configure_logging
from server.runtime import Runtime
from server.security import desktop_token
from server.security.network_guard import LOOPBACK_HOSTS
from server.security.secret_store import ensure_private_dir, write_private_file
from server.settings import Settings

log = logging.getLogger(__name__)

LAN_STATE_FILE = "lan.json"
LAN_EXTRAS_KEY = "lan"


def setup_logging(settings: Settings, *, console: bool = True) -> None:
    """Logging for a host process (rotating file in the data dir); the desktop calls this once."""
    configure_logging(settings, console=console)


class EmbeddedServerError(RuntimeError):
    """The embedded server could not start. ``kind`` is a stable key the host can translate."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# --------------------------------------------------------------------------------------------------
# sockets and error classification
# --------------------------------------------------------------------------------------------------


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``::`` is dual-stack)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(256)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


def classify_start_error(exc: BaseException, *, host: str = "", port: int = 0) -> EmbeddedServerError:
    """Turn a start-up failure into a kind and a one-line message (no SQL, no paths of secrets)."""
    if isinstance(exc, EmbeddedServerError):
        return exc
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps driver errors
    text = str(orig).lower()
    number = getattr(orig, "errno", None)
    if isinstance(orig, OSError) and number == errno.EADDRINUSE:
        return EmbeddedServerError("port_in_use", f"port {port} on {host} is already in use by another program")
    if isinstance(orig, OSError) and number == errno.EADDRNOTAVAIL:
        return EmbeddedServerError("address_unavailable", f"{host} is not an address of this computer")
    if (isinstance(orig, OSError) and number == errno.ENOSPC) or "disk is full" in text or "database or disk is full" in text:
        return EmbeddedServerError("disk_full", "the disk holding the data folder is full; free some space")
    if "database is locked" in text or "database table is locked" in text or "busy" in text:
        return EmbeddedServerError(
            "database_locked", "the database is locked by another program (is ModelTrain already running?)"
        )
    if isinstance(orig, PermissionError) or (isinstance(orig, OSError) and number in (errno.EACCES, errno.EROFS)) or (
        "readonly" in text or "read-only" in text
    ):
        return EmbeddedServerError("permission_denied", "the data folder cannot be written (permission denied)")
    if isinstance(orig, (sqlite3.Error,)) or type(exc).__module__.startswith("sqlalchemy"):
        return EmbeddedServerError("database_error", f"the database cannot be opened: {_first_line(str(orig))}")
    return EmbeddedServerError("startup_failed", f"start-up failed: {type(orig).__name__}: {_first_line(str(orig))}")


# --------------------------------------------------------------------------------------------------
# ASGI tagging and uvicorn subclass
# --------------------------------------------------------------------------------------------------


class _Listener:
    """Marks each request with the listener it came in on; remembers a lifespan start-up exception."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name
        self.lifespan_error: BaseException | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            try:
                await self.app(scope, receive, send)
            except BaseException as exc:
                self.lifespan_error = exc
                raise
            return
        scope[desktop_token.LISTENER_SCOPE_KEY] = self.name
        await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    """uvicorn.Server that signals a threading.Event once it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def _config(app: ASGIApp, settings: Settings, *, lifespan: str) -> uvicorn.Config:
    """uvicorn's settings for both listeners: our HTTP protocol, and no WebSocket protocol (the app has
    no WebSocket routes; ``ws="auto"`` would import the ``websockets`` package into the desktop process,
    ~15 ms and ~1 MiB at start-up)."""
    return uvicorn.Config(
        app,
        http=CoalescingHttpToolsProtocol,
        ws="none",
        lifespan=lifespan,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        timeout_keep_alive=5,
    )


def _run_loop(main: Callable[[], Any], loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> None:
    if hasattr(asyncio, "Runner"):  # Python >= 3.11
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())
        return
    loop = (loop_factory or asyncio.new_event_loop)()
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --------------------------------------------------------------------------------------------------
# the embedded server
# --------------------------------------------------------------------------------------------------


class EmbeddedServer:
    def __init__(
        self, settings: Settings, host: str = "127.0.0.1", port: int = 0, *, app: FastAPI | None = None
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self._app = app if app is not None else create_app(settings)
        self._asgi = _Listener(self._app, desktop_token.LOOPBACK_LISTENER)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._error: BaseException | None = None
        self._url: str | None = None
        self._lan: LanController | None = None
        self._stopped = threading.Event()

    # ---- properties -------------------------------------------------------------------------

    @property
    def app(self) -> FastAPI:
        return self._app

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the embedded server has not started")
        return self._url

    @property
    def runtime(self) -> Runtime:
        return self._app.state.runtime

    @property
    def desktop_token(self) -> str | None:
        """The per-process desktop token (desktop mode only). Never log or display it."""
        token = desktop_token.get(self.runtime.extras)
        return token.value if token else None

    @property
    def lan(self) -> LanController | None:
        return self._lan

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    # ---- lifecycle --------------------------------------------------------------------------

    def enable_lan_control(self) -> LanController:
        """Register the LAN controller (``runtime.extras["lan"]``) so ``/api/lan`` works."""
        if self._lan is None:
            self._lan = LanController(self)
            self.runtime.extras[LAN_EXTRAS_KEY] = self._lan
        return self._lan

    def start(self, timeout: float = 30.0, *, restore_lan: bool = True, sock: socket.socket | None = None) -> str:
        """Serve and wait until the app has started; return the URL. ``sock``: a listening socket the
        host bound beforehand (the desktop binds it before importing the server, so its web view can
        connect while the server is still starting; the connection waits in the listen backlog). It is
        used instead of binding ``host:port``, and closed if the start fails."""
        if self._thread is not None:
            raise RuntimeError("the embedded server was already started")
        if sock is not None:
            self._sock = sock
            self.host = sock.getsockname()[0]
        else:
            try:
                self._sock = bind_listener(self.host, self.port)
            except OSError as exc:
                raise classify_start_error(exc, host=self.host, port=self.port) from None
        port = self._sock.getsockname()[1]
        self._server = _Server(_config(self._asgi, self.settings, lifespan="on"))
        self._thread = threading.Thread(target=self._run, name="modeltrain-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.ready.wait(0.05):
            if not self._thread.is_alive():
                break
            if time.monotonic() > deadline:
                self.stop(timeout=2)
                raise EmbeddedServerError("timeout", f"the server did not start within {timeout:.0f} s")
        if not self._server.ready.is_set():
            self._thread.join(5)
            error = self._asgi.lifespan_error or self._error or RuntimeError("the server stopped during start-up")
            self._close_socket()
            raise classify_start_error(error, host=self.host, port=port)
        self._url = f"http://{_host_for_url(self.host)}:{port}"
        log.info("embedded server listening on %s", self._url)
        if restore_lan and self._lan is not None:
            self._lan.restore()
        return self._url

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        server, sock = self._server, self._sock

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            await server.serve(sockets=[sock])

        try:
            _run_loop(main, server.config.get_loop_factory())
        except BaseException as exc:  # SystemExit from a failed start-up lands here too
            self._error = exc
            if not isinstance(exc, SystemExit):
                log.exception("embedded server crashed")
        finally:
            self._loop = None
            self._stopped.set()

    def call_soon(self, coro_factory: Callable[[], Any]) -> Future:
        """Run a coroutine on the server's event loop from another thread."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the embedded server is not running")
        return asyncio.run_coroutine_threadsafe(coro_factory(), loop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop everything within ``timeout`` seconds (LAN listener, app, Ollama we started, WAL)."""
        deadline = time.monotonic() + timeout
        if self._lan is not None:
            self._lan.close(persist=False)
        thread, server = self._thread, self._server
        if thread is not None and server is not None:
            server.should_exit = True
            thread.join(max(0.1, deadline - time.monotonic() - 0.5))
            if thread.is_alive():
                log.warning("server shutdown exceeded its budget; forcing exit")
                server.force_exit = True
                thread.join(max(0.1, deadline - time.monotonic()))
        self._close_socket()
        self._stop_ollama()
        self.checkpoint()

    def _close_socket(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass

    def _stop_ollama(self) -> None:
        daemon = self.runtime.extras.get("ollama_daemon")
        close = getattr(daemon, "close", None)
        if callable(close):
            try:
                close()  # stops only an Ollama we started; an external one is left alone
            except Exception:
                log.exception("stopping the managed Ollama failed")

    def checkpoint(self) -> None:
        """Fold the SQLite WAL back into the database file (a no-op for other databases)."""
        if not self.settings.is_sqlite:
            return
        path = sqlite_path(self.settings.resolved_database_url)
        if path is None or not path.exists():
            return
        try:
            conn = sqlite3.connect(str(path), timeout=1.0)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint skipped: %s", exc)


# --------------------------------------------------------------------------------------------------
# LAN listener
# --------------------------------------------------------------------------------------------------


def _normal_ip(value: str) -> str | None:
    try:
        ip = ipaddress.ip_address(value.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None
    if ip.is_loopback or (ip.version == 6 and ip.is_link_local):
        return None
    return str(ip)


def interface_addresses(bind_host: str) -> list[str]:
    """The machine's addresses a LAN client may use for ``bind_host`` (loopback excluded)."""
    if bind_host not in ("0.0.0.0", "::"):
        return [str(ipaddress.ip_address(bind_host))]
    families = {socket.AF_INET} if bind_host == "0.0.0.0" else {socket.AF_INET, socket.AF_INET6}
    result: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in families:
                found = _normal_ip(addr.address)
                if found and found not in result:
                    result.append(found)
    return result


def host_names() -> list[str]:
    """This machine's name (and its mDNS ``.local`` form); no DNS look-ups."""
    name = socket.gethostname().strip().lower().rstrip(".")
    names = [name] if name and name not in LOOPBACK_HOSTS else []
    if names and "." not in name:
        names.append(f"{name}.local")
    return names


def _preferred(addresses: list[str]) -> str | None:
    def rank(addr: str) -> tuple[int, int]:
        ip = ipaddress.ip_address(addr)
        return (0 if ip.version == 4 else 1, 0 if ip.is_private and not ip.is_link_local else 1)

    return min(addresses, key=rank) if addresses else None


class LanController:
    """Opens/closes the LAN listener of an :class:`EmbeddedServer`; persists the choice (0600 JSON)."""

    def __init__(self, embedded: EmbeddedServer) -> None:
        self._embedded = embedded
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._sock: socket.socket | None = None
        self._future: Future | None = None
        self._host: str | None = None
        self._port: int | None = None
        self._addresses: list[str] = []
        self._added_hosts: set[str] = set()
        self._error: str | None = None

    @property
    def state_file(self):
        return self._embedded.settings.data_dir / LAN_STATE_FILE

    # ---- persistence ------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        """The saved choice; anything unreadable means "off" (security.md A5: corrupted -> loopback only)."""
        defaults = {"enabled": False, "host": self._embedded.settings.lan_host, "port": self._embedded.settings.lan_port}
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return defaults
        except (OSError, ValueError):
            log.warning("the LAN setting in %s is unreadable; LAN access stays off", self.state_file)
            return defaults
        if not isinstance(data, dict):
            return defaults
        host, port = data.get("host"), data.get("port")
        try:
            host = str(ipaddress.ip_address(str(host)))
            port = int(port)
            if not 0 <= port <= 65535:
                raise ValueError
        except (ValueError, TypeError):
            return defaults
        return {"enabled": data.get("enabled") is True, "host": host, "port": port}

    def _save(self, enabled: bool, host: str, port: int) -> None:
        ensure_private_dir(self._embedded.settings.data_dir)
        write_private_file(self.state_file, json.dumps({"enabled": enabled, "host": host, "port": port}) + "\n")

    # ---- API used by services/lan.py ---------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self._lock:
            enabled = self._server is not None
            if enabled:
                assert self._host is not None and self._port is not None
                urls = [f"http://{_host_for_url(a)}:{self._port}" for a in self._addresses]
                best = _preferred(self._addresses)
                url = f"http://{_host_for_url(best)}:{self._port}" if best else None
                return {
                    "enabled": True,
                    "url": url,
                    "host": self._host,
                    "port": self._port,
                    "urls": urls,
                    "addresses": sorted(self._added_hosts | set(self._addresses)),
                    "error": None,
                }
            saved = self.load_state()
            return {
                "enabled": False,
                "url": None,
                "host": saved["host"],
                "port": saved["port"],
                "urls": [],
                "addresses": [],
                "error": self._error,
            }

    def enable(self, host: str | None = None, port: int | None = None) -> dict[str, Any]:
        saved = self.load_state()
        host = host if host is not None else saved["host"]
        port = port if port is not None else saved["port"]
        with self._lock:
            if self._server is not None and self._host == host and (port in (0, self._port)):
                return self.status()
            self.close(persist=False)
            self._open(host, port)
            self._save(True, host, self._port or port)
            return self.status()

    def disable(self) -> dict[str, Any]:
        with self._lock:
            self.close(persist=True)
            return self.status()

    def restore(self) -> None:
        """At start-up: reopen the listener if LAN access was on. Failures are logged, never fatal."""
        saved = self.load_state()
        if not saved["enabled"]:
            return
        try:
            with self._lock:
                self._open(saved["host"], saved["port"])
        except Exception as exc:  # a DomainError or OSError: report through status(), keep running
            message = getattr(exc, "message", None) or str(exc)
            with self._lock:
                self._error = message
            log.warning("LAN access could not be restored: %s", message)

    # ---- internals --------------------------------------------------------------------------

    def _open(self, host: str, port: int) -> None:
        embedded = self._embedded
        if embedded.loop is None:
            raise Conflict("the server is not running", code="lan_unavailable")
        try:
            sock = bind_listener(host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise Conflict(f"port {port} on {host} is already in use; choose another port", code="port_in_use") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InvalidInput(f"{host} is not an address of this computer", code="address_unavailable") from None
            if exc.errno == errno.EACCES:
                raise Conflict(f"port {port} needs administrator rights; choose a port above 1023", code="port_not_permitted") from None
            raise Conflict(f"cannot listen on {host}:{port}: {exc.strerror}", code="lan_bind_failed") from None
        actual_port = sock.getsockname()[1]
        addresses = interface_addresses(host)
        guard = embedded.runtime.guard
        wanted = set(addresses) | set(host_names())
        added = {h for h in wanted if h not in guard.allowed_hosts and "*" not in h}
        guard.allowed_hosts.update(added)
        server = _Server(_config(_Listener(embedded.app, desktop_token.LAN_LISTENER), embedded.settings, lifespan="off"))
        future = embedded.call_soon(lambda: server.serve(sockets=[sock]))
        deadline = time.monotonic() + 10
        while not server.ready.wait(0.05):
            if future.done() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                guard.allowed_hosts.difference_update(added)
                raise Conflict(f"the LAN listener on {host}:{actual_port} did not start", code="lan_bind_failed")
        self._server, self._sock, self._future = server, sock, future
        self._host, self._port, self._addresses, self._added_hosts = host, actual_port, addresses, added
        self._error = None
        log.warning("LAN access on: listening on %s:%s", _host_for_url(host), actual_port)

    def close(self, *, persist: bool) -> None:
        """Close the LAN socket at once (in-flight requests finish); drop the added Host names."""
        with self._lock:
            server, sock = self._server, self._sock
            if server is not None and sock is not None:
                server.should_exit = True
                # uvicorn closes the listening socket on its next tick (<= 0.1 s); wait for that, not for
                # in-flight requests (the request turning LAN off may itself arrive over the LAN).
                deadline = time.monotonic() + 2
                while sock.fileno() != -1 and time.monotonic() < deadline and self._future and not self._future.done():
                    time.sleep(0.01)
                if sock.fileno() != -1:
                    sock.close()
                self._embedded.runtime.guard.allowed_hosts.difference_update(self._added_hosts)
                log.warning("LAN access off: listener on %s:%s closed", self._host, self._port)
            if persist and self._host is not None and self._port is not None:
                self._save(False, self._host, self._port)
            elif persist:
                saved = self.load_state()
                if saved["enabled"]:
                    self._save(False, saved["host"], saved["port"])
            self._server = self._sock = None
            self._added_hosts = set()
            self._addresses = []
