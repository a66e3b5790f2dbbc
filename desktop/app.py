"""The desktop application: QApplication, single instance, embedded server, window, tray, shutdown.

``modeltrain-desktop [--data-dir DIR]`` opens the window; ``--self-test [--screenshot PATH]`` starts,
loads the UI, signs the owner in through the page, checks health, optionally saves a screenshot, shuts
down in order, and exits 0 or 1 with a one-line reason on stdout (the harness: :mod:`desktop.self_test`).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from PySide6.QtCore import QObject, Slot

from desktop.self_test import SelfTest, seconds_since_process_start

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication

    from desktop.api_client import ApiClient
    from desktop.health_poller import HealthPoller
    from desktop.lan_dialog import LanDialog
    from desktop.server_host import StartJob
    from server.settings import Settings

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET_S = 5.0
STARTUP_GC_PAUSE_MAX_MS = 15_000
#: After the UI has loaded, the page signs in and fetches its first data; then start-up caches and the
#: heap freed during start-up are handed back to the OS (see desktop.memory.release_startup_memory).
HEAP_TRIM_DELAY_MS = 1_000


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="modeltrain-desktop", description="ModelTrain desktop app")
    parser.add_argument("--data-dir", help="data directory (default: the platform's user data folder)")
    parser.add_argument("--self-test", action="store_true", help="start, load the UI, check health, exit 0/1")
    parser.add_argument("--screenshot", help="with --self-test: save a PNG of the window here")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=0.0,
        help="with --self-test: stay idle this long before measuring memory (benchmarks)",
    )
    return parser.parse_known_args(argv)


def prepare_qt_environment(self_test: bool) -> None:
    """Must run before QApplication exists."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # QtWebEngine refuses to run as root with its sandbox; never disable it for normal users.
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    if (
        self_test
        and sys.platform.startswith("linux")
        and not (
            os.environ.get("DISPLAY")
            or os.environ.get("WAYLAND_DISPLAY")
            or os.environ.get("QT_QPA_PLATFORM")
        )
    ):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from desktop.memory import apply_qt_rendering

    apply_qt_rendering()
    import PySide6.QtWebEngineWidgets  # noqa: F401  (must be imported before QApplication)
    from PySide6.QtCore import QCoreApplication, Qt

    QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)


def build_settings(data: Path) -> Settings:
    from desktop.paths import webui_dist
    from server.settings import load_settings

    dist = webui_dist()
    return load_settings(
        data_dir=data, desktop_mode=True, webui_dist=dist if (dist / "index.html").is_file() else None
    )


class DesktopApp(QObject):
    """Lives on the GUI thread; the server host's signals arrive here queued from its worker thread."""

    def __init__(
        self, qapp: QApplication, args: argparse.Namespace, settings: Settings, data: Path, job: StartJob
    ) -> None:
        super().__init__()
        from PySide6.QtCore import QSettings, QTimer

        from desktop.i18n import language
        from desktop.server_host import ServerHost

        self.qapp = qapp
        self.args = args
        self.settings = settings
        self.data = data
        self.lang = language()
        self.exit_code = 0
        self.quitting = False
        self.shutdown_seconds: float | None = None
        self.phases: dict[str, float] = {}
        self.self_test: SelfTest | None = None
        if args.self_test:
            self.self_test = SelfTest(self, screenshot=args.screenshot, idle_seconds=args.idle_seconds)
        from desktop.paths import qsettings_file

        # The server began starting at the top of main() (worker thread); results arrive as signals.
        self.server = ServerHost(job)
        self.server.started.connect(self._on_started)
        self.server.failed.connect(self._on_failed)
        from desktop.main_window import MainWindow
        from desktop.tray import Tray

        self.qsettings = QSettings(str(qsettings_file(data)), QSettings.Format.IniFormat)
        self.tray = Tray(self._close_to_tray_setting(), self.lang)
        self.window = MainWindow(self.qsettings, self._close_to_tray, self.lang)
        self.api: ApiClient | None = None
        self.poller: HealthPoller | None = None
        self._lan_dialog: LanDialog | None = None
        self.window.close_requested.connect(lambda: self.quit(0))
        self.window.ui_loaded.connect(self._on_load_finished)
        self.tray.open_requested.connect(self.window.bring_to_front)
        self.tray.quit_requested.connect(lambda: self.quit(0))
        self.tray.open_logs_requested.connect(self.open_logs)
        self.tray.ollama_requested.connect(self._ollama)
        self.tray.lan_enable_requested.connect(self._lan_enable)
        self.tray.lan_disable_requested.connect(self._lan_disable)
        self.tray.lan_show_requested.connect(self._lan_show)
        self.tray.close_to_tray_changed.connect(self._set_close_to_tray)
        # Python runs signal handlers only between bytecodes: a periodic timer gives it the chance.
        self._signal_timer = QTimer()
        self._signal_timer.start(200)
        self._signal_timer.timeout.connect(lambda: None)
        self._url: str | None = None
        self._load_ok: bool | None = None

    # ---- preferences --------------------------------------------------------------------------

    def _close_to_tray_setting(self) -> bool:
        value = self.qsettings.value("desktop/close_to_tray", True)
        return value in (True, "true", "1", 1)

    def _close_to_tray(self) -> bool:
        return self.tray.available and self._close_to_tray_setting()

    def _set_close_to_tray(self, value: bool) -> None:
        self.qsettings.setValue("desktop/close_to_tray", bool(value))
        self.qsettings.sync()

    # ---- start-up -----------------------------------------------------------------------------

    def start(self) -> None:
        self.mark("window created")
        self.window.show()
        self.tray.show()
        self.mark("window shown")
        early = self.server.early_url
        if early is not None:
            # The page starts loading while the server is still starting (see desktop.server_host).
            self._url = early
            self.window.open_origin(early, lambda: self.server.desktop_token)
        self.server.attach()
        from PySide6.QtCore import QTimer

        # The collector resumes when the UI has loaded, or after this long whatever happens.
        QTimer.singleShot(STARTUP_GC_PAUSE_MAX_MS, _end_startup_gc_pause)
        if self.self_test is not None:
            self.self_test.arm()

    def mark(self, phase: str) -> None:
        """Start-up timeline (seconds since the process started), logged and reported by --self-test."""
        self.phases[phase] = round(seconds_since_process_start(), 3)
        log.info("start-up: %s at %.3f s", phase, self.phases[phase])

    @Slot(str)
    def _on_started(self, url: str) -> None:
        self.mark("server started")
        from desktop.api_client import ApiClient
        from desktop.health_poller import HealthPoller

        token = self.server.desktop_token
        if url != self._url or self._load_ok is False:
            # Not opened early (or elsewhere), or that early load failed: (re)load the UI now.
            self._url, self._load_ok = url, None
            self.window.open_origin(url, token)
        self.api = ApiClient(url, token)
        self.poller = HealthPoller(self.api)
        self.poller.updated.connect(self.tray.apply_health)
        self.poller.notify.connect(self.tray.notify)
        self.poller.lan_status.connect(self.tray.set_lan)
        if self.self_test is None:
            self.poller.start()
        else:
            self.self_test.proceed(self._load_ok)

    @Slot(str, str)
    def _on_failed(self, kind: str, message: str) -> None:
        if self.self_test is not None:
            self.self_test.fail(f"server did not start ({kind}): {message}")
            return
        from desktop.main_window import show_start_error

        self.window.hide()
        show_start_error(None, kind, message, self.settings.resolved_log_dir, self.lang)
        self.quit(1)

    @Slot(bool)
    def _on_load_finished(self, ok: bool) -> None:
        if self._load_ok is not None:
            return  # only the first load of the UI counts
        self._load_ok = ok
        if not ok and self.api is None:
            return  # opened before the server had started, which then failed (or _on_started reloads)
        self.mark("ui loaded")
        if self.self_test is not None:
            self.self_test.ui_loaded()
        _end_startup_gc_pause()
        from PySide6.QtCore import QTimer

        from desktop.memory import release_startup_memory

        QTimer.singleShot(HEAP_TRIM_DELAY_MS, release_startup_memory)
        if self.self_test is not None:
            self.self_test.proceed(ok)

    @Slot()
    def activate_from_second_launch(self) -> None:
        log.info("a second launch asked for the window")
        self.window.bring_to_front()

    # ---- tray actions -------------------------------------------------------------------------

    def open_logs(self) -> None:
        from desktop.main_window import open_folder

        open_folder(self.settings.resolved_log_dir)

    def _ollama(self, action: str) -> None:
        if self.api is None:
            return
        from desktop.health_poller import Notification

        def done(status: int, payload: Any) -> None:
            if status != 200:
                message = payload.get("message") if isinstance(payload, dict) else f"HTTP {status}"
                self.tray.notify(Notification("Ollama", str(message), "warning"))
            if self.poller is not None:
                self.poller.poll_now()

        self.api.request("POST", f"/api/ollama/{action}", done, body={})

    def _lan_enable(self) -> None:
        if self.api is None:
            return
        self.api.get(
            "/api/lan", lambda status, payload: self._open_lan_dialog(payload if status == 200 else None)
        )

    def _lan_show(self) -> None:
        self._lan_enable()

    def _open_lan_dialog(self, status: dict | None) -> None:
        from desktop.lan_dialog import LanDialog

        dialog = LanDialog(status, self.lang, self.window if self.window.isVisible() else None)
        self._lan_dialog = dialog

        def submitted(host: str, port: int, password: str) -> None:
            def done(code: int, payload: Any) -> None:
                if code == 200 and isinstance(payload, dict):
                    dialog.show_enabled(payload)
                    self.tray.set_lan(payload)
                else:
                    message = payload.get("message") if isinstance(payload, dict) else None
                    dialog.show_error(str(message or f"HTTP {code}"))

            assert self.api is not None
            self.api.request(
                "PUT",
                "/api/lan",
                done,
                body={"enabled": True, "host": host, "port": port, "password": password},
            )

        dialog.submitted.connect(submitted)
        dialog.show()

    def _lan_disable(self) -> None:
        self.server.lan_disable()
        if self.poller is not None:
            self.poller.poll_now()

    # ---- shutdown -----------------------------------------------------------------------------

    def quit(self, code: int = 0) -> None:
        """Orderly shutdown: stop polling, close the window and tray, stop the server (LAN listener,
        streams, Ollama we started, WAL checkpoint), then leave the event loop."""
        if self.quitting:
            return
        self.quitting = True
        self.exit_code = code
        started = time.monotonic()
        if self.poller is not None:
            self.poller.stop()
        if self.api is not None:
            self.api.abort_all()
        if self._lan_dialog is not None:
            self._lan_dialog.close()
        self.window.mark_quitting()
        self.window.save_geometry()
        self.window.hide()
        self.tray.hide()
        self.server.stop(timeout=SHUTDOWN_BUDGET_S - 1.0)
        self.window.dispose()
        self.tray.dispose()
        self._signal_timer.stop()
        self.shutdown_seconds = time.monotonic() - started
        self.qapp.exit(code)

    def install_signal_handlers(self) -> None:
        from PySide6.QtCore import QTimer

        def handler(signum: int, _frame: object) -> None:
            log.info("signal %s received: shutting down", signum)
            QTimer.singleShot(0, lambda: self.quit(0))

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def _join_stray_threads(timeout: float) -> list[str]:
    """Give worker threads (uvicorn's loop, AnyIO workers) a moment to end; return those still alive."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()]


def _end_startup_gc_pause() -> None:
    """Collect again after start-up. Objects made while importing (modules, routes, schemas) live as
    long as the app, so they are moved out of the collector's way first."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    # Start-up allocates hundreds of thousands of long-lived objects (imports of Qt, FastAPI, SQLAlchemy,
    # pydantic): cyclic collection passes over them would only cost time (~0.1 s), so they wait until
    # the UI has loaded. Reference counting still frees everything else as usual.
    gc.disable()
    try:
        return _main(argv)
    finally:
        _end_startup_gc_pause()


def _main(argv: Sequence[str] | None = None) -> int:
    from desktop.memory import skip_pyside_source_scan

    skip_pyside_source_scan()  # PySide6 is imported (above): before the server stack's imports
    args, qt_args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.screenshot and not args.self_test:
        print("modeltrain-desktop: --screenshot needs --self-test", file=sys.stderr)
        return 2
    from desktop.paths import data_dir, local_server_name
    from desktop.server_host import begin_start
    from server.settings import SettingsError

    data = data_dir(args.data_dir)
    try:
        settings = build_settings(data)
    except SettingsError as exc:
        print(f"modeltrain-desktop: {exc}", file=sys.stderr)
        return 2

    guard = None
    if not args.self_test:
        from desktop.single_instance import SingleInstance

        guard = SingleInstance(local_server_name(data))
        if guard.notify_running():
            return 0  # the first instance shows its window
    # Start the server now, in a worker thread, while Qt and its web engine load on this thread.
    job = begin_start(settings, lan=not args.self_test, log_to_console=not args.self_test)
    prepare_qt_environment(args.self_test)

    from PySide6.QtCore import QCoreApplication, QEvent
    from PySide6.QtWidgets import QApplication

    qapp = cast("QApplication", QApplication.instance() or QApplication([sys.argv[0], *qt_args]))
    t_qapp = seconds_since_process_start()
    from desktop.memory import apply_chromium_flags

    apply_chromium_flags(qapp.platformName())  # the web engine starts with the window's profile, below
    qapp.setApplicationName("ModelTrain")
    qapp.setOrganizationName("ModelTrain")
    qapp.setQuitOnLastWindowClosed(False)
    if guard is not None:
        guard.listen()

    app = DesktopApp(qapp, args, settings, data, job)
    if guard is not None:
        guard.activated.connect(app.activate_from_second_launch)
    app.install_signal_handlers()
    app.start()
    qapp.exec()
    if guard is not None:
        guard.close()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    QCoreApplication.processEvents()
    stray = _join_stray_threads(1.0)
    code = app.exit_code
    if stray:
        log.warning("threads still running after shutdown: %s", ", ".join(stray))
    if app.self_test is not None:
        code = app.self_test.report(
            code,
            stray_threads=stray,
            qapp_at=t_qapp,
            phases=app.phases,
            shutdown_seconds=app.shutdown_seconds,
        )
    return code
