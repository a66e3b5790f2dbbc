"""The desktop application: QApplication, single instance, embedded server, window, tray, shutdown.

``modeltrain-desktop [--data-dir DIR]`` opens the window; ``--self-test [--screenshot PATH]`` starts,
loads the UI, signs the owner in through the page, checks health, optionally saves a screenshot, shuts
down in order, and exits 0 or 1 with a one-line reason on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Slot

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET_S = 5.0
SELF_TEST_TIMEOUT_S = 60.0
STARTUP_GC_PAUSE_MAX_MS = 15_000
#: After the UI has loaded, the page signs in and fetches its first data; then start-up caches and the
#: heap freed during start-up are handed back to the OS (see desktop.memory.release_startup_memory).
HEAP_TRIM_DELAY_MS = 1_000

#: Runs in the page (our origin) during --self-test: the desktop sign-in the web UI also does, then
#: /api/users/me. The desktop token itself is added by the request interceptor; the page never sees it.
_SIGN_IN_JS = """
(function () {
  window.__mtSelfTest = null;
  fetch('/api/auth/desktop', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'})
    .then(function (r) { return r.ok ? r.json() : Promise.reject('desktop sign-in HTTP ' + r.status); })
    .then(function (t) { return fetch('/api/users/me', {headers: {'Authorization': 'Bearer ' + t.access_token}}); })
    .then(function (r) { return r.ok ? r.json() : Promise.reject('/api/users/me HTTP ' + r.status); })
    .then(function (u) { window.__mtSelfTest = {ok: true, email: u.email, role: u.role}; })
    .catch(function (e) { window.__mtSelfTest = {ok: false, error: String(e)}; });
  return true;
})()
"""


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="modeltrain-desktop", description="ModelTrain desktop app")
    parser.add_argument("--data-dir", help="data directory (default: the platform's user data folder)")
    parser.add_argument("--self-test", action="store_true", help="start, load the UI, check health, exit 0/1")
    parser.add_argument("--screenshot", help="with --self-test: save a PNG of the window here")
    parser.add_argument("--idle-seconds", type=float, default=0.0,
                        help="with --self-test: stay idle this long before measuring memory (benchmarks)")
    return parser.parse_known_args(argv)


def prepare_qt_environment(self_test: bool) -> None:
    """Must run before QApplication exists."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # QtWebEngine refuses to run as root with its sandbox; never disable it for normal users.
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    if self_test and sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    ):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from desktop.memory import apply_qt_rendering

    apply_qt_rendering()
    import PySide6.QtWebEngineWidgets  # noqa: F401  (must be imported before QApplication)
    from PySide6.QtCore import QCoreApplication, Qt

    QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)


def build_settings(data: Path):
    from desktop.paths import webui_dist
    from server.settings import load_settings

    dist = webui_dist()
    return load_settings(data_dir=data, desktop_mode=True, webui_dist=dist if (dist / "index.html").is_file() else None)


def process_tree_breakdown() -> list[tuple[str, float, float]]:
    """(role, RSS MiB, PSS MiB) of this process ("app": Qt browser process + server) and each descendant.
    A renderer is forked by a zygote and keeps the zygote's command line, so it is named by its parent."""
    import psutil

    me = psutil.Process()
    rows = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            rss = proc.memory_info().rss
            try:
                pss = getattr(proc.memory_full_info(), "pss", 0)
            except (psutil.AccessDenied, AttributeError):
                pss = 0
            role = "app" if proc.pid == me.pid else _helper_role(proc.cmdline(), proc.ppid() != me.pid)
        except psutil.NoSuchProcess:
            continue
        rows.append((role, rss / 2**20, pss / 2**20))
    return rows


def _helper_role(cmdline: list[str], forked_by_helper: bool) -> str:
    kind = next((arg.split("=", 1)[1] for arg in cmdline if arg.startswith("--type=")), "helper")
    if kind == "zygote" and forked_by_helper:
        return "renderer"
    return kind


def process_cpu_seconds() -> float:
    """CPU time (user + system) of this process so far: a load-independent start-up cost."""
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def seconds_since_process_start() -> float:
    import psutil

    return time.time() - psutil.Process().create_time()


class DesktopApp(QObject):
    """Lives on the GUI thread; the server host's signals arrive here queued from its worker thread."""

    def __init__(self, qapp, args: argparse.Namespace, settings, data: Path, job) -> None:
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
        self.result_line: str | None = None
        self.quitting = False
        self.shutdown_seconds: float | None = None
        self.metrics: dict[str, Any] = {}
        self.phases: dict[str, float] = {}
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
        self.api = None
        self.poller = None
        self._lan_dialog = None
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
        self._signing_in = False

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
        if self.args.self_test:
            QTimer.singleShot(int(SELF_TEST_TIMEOUT_S * 1000), lambda: self.fail("timed out"))

    def mark(self, phase: str) -> None:
        """Start-up timeline (seconds since the process started), logged and kept for --self-test."""
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
        if not self.args.self_test:
            self.poller.start()
        self._continue_self_test()

    @Slot(str, str)
    def _on_failed(self, kind: str, message: str) -> None:
        if self.args.self_test:
            self.fail(f"server did not start ({kind}): {message}")
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
        self.metrics["ui_loaded_s"] = seconds_since_process_start()
        _end_startup_gc_pause()
        from PySide6.QtCore import QTimer

        from desktop.memory import release_startup_memory

        QTimer.singleShot(HEAP_TRIM_DELAY_MS, release_startup_memory)
        self._continue_self_test()

    def _continue_self_test(self) -> None:
        """With --self-test: sign in through the page once both the UI has loaded and the server has
        reported its start (the UI may load first, as the page opens before the server has started)."""
        if not self.args.self_test or self.api is None or self._load_ok is None or self._signing_in:
            return
        if not self._load_ok:
            self.fail("the UI did not load")
            return
        self._signing_in = True
        self._self_test_sign_in()

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
        self.api.get("/api/lan", lambda status, payload: self._open_lan_dialog(payload if status == 200 else None))

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
                    dialog.show_error(payload.get("message") if isinstance(payload, dict) else f"HTTP {code}")

            assert self.api is not None
            self.api.request("PUT", "/api/lan", done, body={"enabled": True, "host": host, "port": port,
                                                             "password": password})

        dialog.submitted.connect(submitted)
        dialog.show()

    def _lan_disable(self) -> None:
        self.server.lan_disable()
        if self.poller is not None:
            self.poller.poll_now()

    # ---- self-test ----------------------------------------------------------------------------

    def _self_test_sign_in(self) -> None:
        from PySide6.QtCore import QTimer

        page = self.window.page
        page.runJavaScript(_SIGN_IN_JS, 0, lambda _result: None)
        deadline = time.monotonic() + 15

        def poll() -> None:
            def got(value: Any) -> None:
                if self.quitting:
                    return
                result = json.loads(value) if isinstance(value, str) and value != "null" else None
                if result is None:
                    if time.monotonic() > deadline:
                        self.fail("the page did not finish the desktop sign-in")
                    else:
                        QTimer.singleShot(20, poll)
                    return
                if not result.get("ok"):
                    self.fail(f"desktop sign-in failed in the page: {result.get('error')}")
                    return
                self.metrics["interactive_s"] = seconds_since_process_start()
                self.metrics["cpu_s"] = process_cpu_seconds()
                self.metrics["user"] = result.get("email")
                self._self_test_health()

            page.runJavaScript("JSON.stringify(window.__mtSelfTest || null)", 0, got)

        poll()

    def _self_test_health(self) -> None:
        assert self.api is not None
        checks: dict[str, Any] = {}

        def live(status: int, payload: Any) -> None:
            if status != 200 or not isinstance(payload, dict) or payload.get("status") != "ok":
                self.fail(f"/api/health answered HTTP {status}")
                return
            self.api.get("/api/health/ready", ready, auth=False)

        def ready(status: int, payload: Any) -> None:
            if status != 200:
                detail = json.dumps(payload.get("checks")) if isinstance(payload, dict) else ""
                self.fail(f"not ready (HTTP {status}) {detail}")
                return
            checks["ready"] = True
            self._self_test_finish()

        self.api.get("/api/health", live, auth=False)

    def _self_test_finish(self) -> None:
        from PySide6.QtCore import QTimer

        if not self.args.screenshot:
            self._self_test_measure()
            return
        deadline = time.monotonic() + 3
        previous: list = []

        def try_grab() -> None:
            if self.quitting:
                return
            image = self.window.grab().toImage()
            settled = _looks_rendered(image) and bool(previous) and previous[-1] == image
            previous[:] = [image]
            if not settled and time.monotonic() < deadline:
                QTimer.singleShot(100, try_grab)  # wait (bounded) until the page has painted and settled
                return
            path = Path(self.args.screenshot).expanduser().resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            if not image.save(str(path), "PNG"):
                self.fail(f"could not save the screenshot to {path}")
                return
            self.metrics["screenshot"] = str(path)
            self._self_test_measure()

        try_grab()

    def _self_test_measure(self) -> None:
        from PySide6.QtCore import QTimer

        def measure() -> None:
            rows = process_tree_breakdown()
            self.metrics["rss_mib"], self.metrics["pss_mib"] = sum(r[1] for r in rows), sum(r[2] for r in rows)
            self.metrics["processes"] = rows
            self.succeed()

        QTimer.singleShot(int(self.args.idle_seconds * 1000), measure)

    def succeed(self) -> None:
        m = self.metrics
        parts = [
            f"ui {m.get('ui_loaded_s', 0):.2f} s",
            f"interactive {m.get('interactive_s', 0):.2f} s (cpu {m.get('cpu_s', 0):.2f} s)",
            f"signed in as {m.get('user')}",
            "health ready",
            f"rss {m.get('rss_mib', 0):.0f} MiB (pss {m.get('pss_mib', 0):.0f} MiB)",
        ]
        if m.get("screenshot"):
            parts.append(f"screenshot {m['screenshot']}")
        self.result_line = "self-test ok: " + ", ".join(parts)
        self.quit(0)

    def fail(self, reason: str) -> None:
        if self.quitting:
            return
        self.result_line = f"self-test failed: {reason}"
        self.quit(1)

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


def _looks_rendered(image) -> bool:
    """True once the grabbed window shows more than one flat colour (the page has painted)."""
    if image.isNull() or image.width() < 10 or image.height() < 10:
        return False
    colours = set()
    step_x, step_y = max(1, image.width() // 40), max(1, image.height() // 40)
    for y in range(0, image.height(), step_y):
        for x in range(0, image.width(), step_x):
            colours.add(image.pixel(x, y))
            if len(colours) > 2:
                return True
    return False


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

    qapp = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
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
        if args.self_test and code == 0:
            app.result_line = f"self-test failed: threads still running after shutdown: {', '.join(stray)}"
            code = 1
    if args.self_test:
        timeline = ", ".join(f"{name} {at:.2f}" for name, at in sorted(app.phases.items(), key=lambda kv: kv[1]))
        sys.stderr.write(f"start-up timeline (s since process start): qapp {t_qapp:.2f}, {timeline}\n")
        if app.metrics.get("processes"):
            rows = ", ".join(f"{role} {rss:.0f}/{pss:.0f}" for role, rss, pss in app.metrics["processes"])
            sys.stderr.write(f"memory by process (MiB RSS/PSS): {rows}\n")
        line = app.result_line or "self-test failed: no result"
        if code == 0 and app.shutdown_seconds is not None:
            line += f", shutdown {app.shutdown_seconds:.2f} s"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return code
