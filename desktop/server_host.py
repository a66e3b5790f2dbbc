"""Owns the EmbeddedServer for the Qt shell and reports through Qt signals (queued to the GUI thread).

Start-up is split in two so the server can begin before Qt exists:

* :func:`begin_start` (no Qt) starts a worker thread at the very top of ``main()``; it imports the server
  stack (FastAPI, SQLAlchemy, Alembic), builds the app and starts it, while the GUI thread loads Qt
  WebEngine. Its outcome is a ``concurrent.futures.Future``. The loopback socket is bound before the
  thread starts, so the server's URL is known at once (:attr:`StartJob.url`): the web view starts loading
  it while the server is still importing (the connection waits in the socket's backlog until the server
  serves), which takes the web engine's navigation and renderer start-up off the start-up critical path.
* :class:`ServerHost` (a QObject on the GUI thread) turns that outcome into ``started``/``failed``
  signals and owns ``stop()``.
"""

from __future__ import annotations

import logging
import socket
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from server.settings import Settings

if TYPE_CHECKING:
    from server.embedded import EmbeddedServer, EmbeddedServerError

log = logging.getLogger(__name__)

#: The embedded server of the desktop listens on loopback only, on a port the OS picks.
LOOPBACK_HOST = "127.0.0.1"


def bind_loopback() -> socket.socket | None:
    """A listening TCP socket on ``127.0.0.1`` and a free port, or None if that fails (the server then
    binds its own socket and reports any error). Not inherited by child processes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK_HOST, 0))
        sock.listen(256)
    except OSError as exc:
        sock.close()
        log.warning("could not bind the loopback listener early: %s", exc)
        return None
    sock.set_inheritable(False)
    return sock


class StartJob:
    """The server being started in a worker thread; ``future`` resolves to the EmbeddedServer.

    ``url`` is where it will answer, known before it has started (None if the early bind failed)."""

    def __init__(self, settings: Settings, *, lan: bool, log_to_console: bool, timeout: float) -> None:
        self.settings = settings
        self.future: Future = Future()
        self.embedded: Any = None  # set as soon as it exists, so stop() can reach a half-started server
        self._sock = bind_loopback()
        self.url = f"http://{LOOPBACK_HOST}:{self._sock.getsockname()[1]}" if self._sock is not None else None
        self._thread = threading.Thread(
            target=self._run, args=(lan, log_to_console, timeout), name="modeltrain-server-start", daemon=True
        )
        self._thread.start()

    def _run(self, lan: bool, log_to_console: bool, timeout: float) -> None:
        try:
            from server.embedded import EmbeddedServer, classify_start_error, setup_logging
        except BaseException as exc:  # a broken installation
            self._close_socket()
            self.future.set_exception(exc)
            return
        try:
            setup_logging(self.settings, console=log_to_console)
            embedded = EmbeddedServer(self.settings)
            if lan:
                embedded.enable_lan_control()
            self.embedded = embedded
            embedded.start(timeout, restore_lan=lan, sock=self._sock)
        except Exception as exc:  # EmbeddedServerError, or logging/create_app failing (bad data dir...)
            self._close_socket()  # a page waiting on it gets its answer now: the connection is closed
            error = classify_start_error(exc)
            if error is exc:
                log.error("the embedded server could not start: %s", error.message)
            else:
                log.exception("the embedded server could not be created")
            self.future.set_exception(error)
            return
        self.future.set_result(embedded)

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def begin_start(
    settings: Settings, *, lan: bool = True, log_to_console: bool = True, timeout: float = 30.0
) -> StartJob:
    return StartJob(settings, lan=lan, log_to_console=log_to_console, timeout=timeout)


class ServerHost(QObject):
    started = Signal(str)  # url
    failed = Signal(str, str)  # kind, one-line message
    stopped = Signal()

    def __init__(self, job: StartJob, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._job = job
        self.settings = job.settings
        self.error: EmbeddedServerError | None = None

    def attach(self) -> None:
        """Emit ``started``/``failed`` once the job is done (now, if it already is). Connect first."""
        self._job.future.add_done_callback(self._done)

    def _done(self, future: Future) -> None:
        error = future.exception()
        if error is None:
            self.started.emit(future.result().url)
            return
        self.error = error  # type: ignore[assignment]
        self.failed.emit(getattr(error, "kind", "startup_failed"), getattr(error, "message", str(error)))

    @property
    def _embedded(self) -> EmbeddedServer | None:
        return self._job.embedded

    @property
    def url(self) -> str | None:
        embedded = self._embedded
        return embedded.url if embedded is not None and embedded.running else None

    @property
    def early_url(self) -> str | None:
        """The URL the server will answer on, known before it has started (see :class:`StartJob`)."""
        return self._job.url

    @property
    def desktop_token(self) -> str | None:
        """The desktop token; it exists as soon as the app is built, before the server answers anything."""
        embedded = self._embedded
        return embedded.desktop_token if embedded is not None else None

    def lan_disable(self) -> None:
        """Turn LAN access off directly (no password needed to close it), e.g. from the tray."""
        embedded = self._embedded
        if embedded is not None and embedded.lan is not None:
            embedded.lan.disable()

    def stop(self, timeout: float = 4.0) -> None:
        self._job.join(timeout)
        embedded = self._embedded
        if embedded is not None:
            embedded.stop(timeout)
            self._job.embedded = None
        self.stopped.emit()
