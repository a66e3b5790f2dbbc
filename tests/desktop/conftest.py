"""Desktop tests: pytest-qt, offscreen, with a real embedded server per test.

The Qt environment is prepared here, before any QApplication exists: offscreen platform, no sandbox
only when running as root (QtWebEngine refuses otherwise), QtWebEngine imported and OpenGL contexts
shared before the application object is created, and the app's Chromium switches (desktop/memory.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if hasattr(os, "geteuid") and os.geteuid() == 0:
    os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import PySide6.QtWebEngineWidgets  # noqa: F401  (must come before the QApplication)
import pytest
from PySide6.QtCore import QCoreApplication, QEvent, Qt

from desktop.memory import apply_chromium_flags
from server.embedded import EmbeddedServer
from server.settings import Settings

QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
# The web engine runs with the app's Chromium switches (read when the first profile is created).
apply_chromium_flags(os.environ["QT_QPA_PLATFORM"])

INITIAL_PASSWORD = "initial-Admin-pass-9"
ADMIN_PASSWORD = "correct-horse-battery-staple"
SECRET = "test-secret-" + "x7Kq2mPz9vRt4nLw8sYb3cHd6fJg1aE5"


@pytest.fixture(autouse=True)
def _flush_deferred_deletes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Delete Qt objects scheduled with deleteLater after each test (pages before profiles)."""
    yield
    if QCoreApplication.instance() is not None:
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        QCoreApplication.processEvents()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


@pytest.fixture
def make_desktop_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides) -> Settings:
        values = {
            "data_dir": tmp_path / "data",
            "database_url": f"sqlite:///{tmp_path / 'data' / 'modeltrain.db'}",
            "initial_admin_password": INITIAL_PASSWORD,
            "secret_key": SECRET,
            "desktop_mode": True,
            "metrics_interval_seconds": 0.5,
            "_env_file": None,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def desktop_settings(make_desktop_settings: Callable[..., Settings]) -> Settings:
    return make_desktop_settings()


@pytest.fixture
def embedded(desktop_settings: Settings) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(desktop_settings)
    server.enable_lan_control()
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


class RecordingServer:
    """A plain loopback HTTP server that records request paths and headers (to check what was sent).

    ``pages`` maps a path to ``(status, content type, body, extra headers)``.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.pages: dict[str, tuple[int, str, bytes, dict[str, str]]] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                with outer._lock:
                    outer.requests.append(
                        (self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                    )
                status, ctype, body, extra = outer.pages.get(
                    self.path.split("?")[0], (200, "application/json", json.dumps({"ok": True}).encode(), {})
                )
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *_args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="recording-server"
        )

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def headers_for(self, path: str) -> list[dict[str, str]]:
        with self._lock:
            return [h for _m, p, h in self.requests if p.split("?")[0] == path]


@pytest.fixture
def recording_server() -> Iterator[Callable[[], RecordingServer]]:
    started: list[RecordingServer] = []

    def make() -> RecordingServer:
        server = RecordingServer().__enter__()
        started.append(server)
        return server

    yield make
    for server in started:
        server.__exit__(None, None, None)
