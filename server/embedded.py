"""EmbeddedServer: the FastAPI app served by uvicorn in a daemon thread of a host process (the desktop).

* ``start(timeout) -> url`` binds ``host:port`` itself (port 0: a free port) unless given a socket the
  host bound beforehand, runs uvicorn in a thread and waits for the app's start-up to finish; a failure
  raises :class:`EmbeddedServerError` whose ``kind`` names the cause (``port_in_use``,
  ``database_locked``, ``disk_full``...) and whose message is one line a person can act on.
* ``stop(timeout)`` stops accepting, lets open requests finish for ``shutdown_grace_seconds`` and then
  cancels them (so an open SSE stream cannot hang shutdown), runs the app's shutdown, stops an Ollama
  we started and checkpoints the SQLite WAL.
* An optional second listener for LAN access (``enable_lan_control``, see :mod:`server.lan_listener`)
  serves the *same* app instance on the *same* event loop (so loop-bound objects of the app work on
  both), and can be opened and closed at run time. Requests are tagged with the listener they arrived
  on (``scope["modeltrain.listener"]``); the desktop token and desktop sessions count only on loopback.

The uvicorn ``Config`` gets the app object (never an import string), which also keeps PyInstaller happy.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from fastapi import FastAPI

from server.app import create_app, stop_replies
from server.db.session import sqlite_path
from server.lan_listener import LanController
from server.listener import ListenerApp, ReadyServer, bind_listener, host_for_url, uvicorn_config
from server.log_setup import configure_logging
from server.runtime import Runtime
from server.security import desktop_token
from server.settings import Settings

log = logging.getLogger(__name__)


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
# start-up errors
# --------------------------------------------------------------------------------------------------


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
        return EmbeddedServerError(
            "port_in_use", f"port {port} on {host} is already in use by another program"
        )
    if isinstance(orig, OSError) and number == errno.EADDRNOTAVAIL:
        return EmbeddedServerError("address_unavailable", f"{host} is not an address of this computer")
    if (
        (isinstance(orig, OSError) and number == errno.ENOSPC)
        or "disk is full" in text
        or "database or disk is full" in text
    ):
        return EmbeddedServerError("disk_full", "the disk holding the data folder is full; free some space")
    if "database is locked" in text or "database table is locked" in text or "busy" in text:
        return EmbeddedServerError(
            "database_locked", "the database is locked by another program (is ModelTrain already running?)"
        )
    if (
        isinstance(orig, PermissionError)
        or (isinstance(orig, OSError) and number in (errno.EACCES, errno.EROFS))
        or ("readonly" in text or "read-only" in text)
    ):
        return EmbeddedServerError(
            "permission_denied", "the data folder cannot be written (permission denied)"
        )
    if isinstance(orig, (sqlite3.Error,)) or type(exc).__module__.startswith("sqlalchemy"):
        return EmbeddedServerError(
            "database_error", f"the database cannot be opened: {_first_line(str(orig))}"
        )
    return EmbeddedServerError(
        "startup_failed", f"start-up failed: {type(orig).__name__}: {_first_line(str(orig))}"
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
        self._asgi = ListenerApp(self._app, desktop_token.LOOPBACK_LISTENER)
        self._server: ReadyServer | None = None
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
        token = self.runtime.desktop_token
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
        """Register the LAN controller (``runtime.lan``) so ``/api/lan`` works."""
        if self._lan is None:
            self._lan = LanController(self)
            self.runtime.lan = self._lan
        return self._lan

    def start(
        self, timeout: float = 30.0, *, restore_lan: bool = True, sock: socket.socket | None = None
    ) -> str:
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
        self._server = ReadyServer(
            uvicorn_config(self._asgi, self.settings, lifespan="on"),
            before_shutdown=functools.partial(stop_replies, self._app),
        )
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
            error = (
                self._asgi.lifespan_error or self._error or RuntimeError("the server stopped during start-up")
            )
            self._close_socket()
            raise classify_start_error(error, host=self.host, port=port)
        self._url = f"http://{host_for_url(self.host)}:{port}"
        log.info("embedded server listening on %s", self._url)
        if restore_lan and self._lan is not None:
            self._lan.restore()
        return self._url

    def _run(self) -> None:
        assert self._server is not None
        assert self._sock is not None
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
            with contextlib.suppress(OSError):
                self._sock.close()

    def _stop_ollama(self) -> None:
        daemon = self.runtime.ollama_daemon
        if daemon is not None:
            try:
                daemon.close()  # stops only an Ollama we started; an external one is left alone
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
