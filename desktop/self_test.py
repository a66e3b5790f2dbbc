"""``modeltrain-desktop --self-test``: the start-up check that packaging, tests and benchmarks run.

:class:`SelfTest` drives one :class:`desktop.app.DesktopApp` once the UI has loaded and the server has
started: it signs the owner in through the page (the desktop sign-in the web UI also does), checks
``/api/health`` and ``/api/health/ready``, optionally saves a screenshot of the window, waits
``--idle-seconds`` and measures the memory of the process tree, then has the app shut down in order.
:meth:`SelfTest.report` prints the result as one line on stdout (``self-test ok: ...`` or
``self-test failed: <reason>``) and the start-up timeline and memory by process on stderr.

The instrumentation (seconds since the process started, CPU time, memory by process) lives here too;
the app's start-up timeline in the log uses it in every mode.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PySide6.QtGui import QImage

    from desktop.app import DesktopApp

#: The whole self-test fails if it has not finished by then.
TIMEOUT_S = 60.0

#: Runs in the page (our origin) during --self-test: the desktop sign-in the web UI also does, then
#: /api/users/me. The desktop token itself is added by the request interceptor; the page never sees it.
SIGN_IN_JS = """
(function () {
  window.__mtSelfTest = null;
  fetch('/api/auth/desktop', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'})
    .then(function (r) { return r.ok ? r.json() : Promise.reject('desktop sign-in HTTP ' + r.status); })
    .then(function (t) {
      return fetch('/api/users/me', {headers: {'Authorization': 'Bearer ' + t.access_token}});
    })
    .then(function (r) { return r.ok ? r.json() : Promise.reject('/api/users/me HTTP ' + r.status); })
    .then(function (u) { window.__mtSelfTest = {ok: true, email: u.email, role: u.role}; })
    .catch(function (e) { window.__mtSelfTest = {ok: false, error: String(e)}; });
  return true;
})()
"""
#: Reads what SIGN_IN_JS left (a JSON string, "null" while it runs).
SIGN_IN_RESULT_JS = "JSON.stringify(window.__mtSelfTest || null)"
SIGN_IN_TIMEOUT_S = 15.0
SCREENSHOT_SETTLE_S = 3.0


# --------------------------------------------------------------------------------------------------
# instrumentation
# --------------------------------------------------------------------------------------------------


def process_tree_breakdown() -> list[tuple[str, float, float]]:
    """(role, RSS MiB, PSS MiB) of this process ("app": Qt browser process + server) and each descendant.
    A renderer is forked by a zygote and keeps the zygote's command line, so it is named by its parent."""
    import psutil

    me = psutil.Process()
    rows: list[tuple[str, float, float]] = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            rss = proc.memory_info().rss
            try:
                pss = getattr(proc.memory_full_info(), "pss", 0)
            except (psutil.AccessDenied, AttributeError):
                pss = 0
            role = "app" if proc.pid == me.pid else helper_role(proc.cmdline(), proc.ppid() != me.pid)
        except psutil.NoSuchProcess:
            continue
        rows.append((role, rss / 2**20, pss / 2**20))
    return rows


def helper_role(cmdline: list[str], forked_by_helper: bool) -> str:
    """The role of a QtWebEngine helper process from its command line (``--type=...``)."""
    kind = next((arg.split("=", 1)[1] for arg in cmdline if arg.startswith("--type=")), "helper")
    if kind == "zygote" and forked_by_helper:
        return "renderer"
    return kind


def process_cpu_seconds() -> float:
    """CPU time (user + system) of this process so far: a load-independent start-up cost."""
    import psutil

    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def seconds_since_process_start() -> float:
    import psutil

    return time.time() - float(psutil.Process().create_time())


def looks_rendered(image: QImage) -> bool:
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


# --------------------------------------------------------------------------------------------------
# the harness
# --------------------------------------------------------------------------------------------------


class SelfTest:
    """The self-test of one app. Everything here runs on the GUI thread; the outcome is ``result_line``
    and the app's exit code (``fail`` and ``succeed`` ask the app to quit)."""

    def __init__(self, app: DesktopApp, *, screenshot: str | None = None, idle_seconds: float = 0.0) -> None:
        self.app = app
        self.screenshot = screenshot
        self.idle_seconds = idle_seconds
        self.metrics: dict[str, Any] = {}
        self.result_line: str | None = None
        self._signing_in = False

    def arm(self) -> None:
        """Fail after :data:`TIMEOUT_S` whatever happens (a start-up that hangs must not hang the test)."""
        from PySide6.QtCore import QTimer

        QTimer.singleShot(int(TIMEOUT_S * 1000), lambda: self.fail("timed out"))

    def ui_loaded(self) -> None:
        self.metrics["ui_loaded_s"] = seconds_since_process_start()

    def proceed(self, load_ok: bool | None) -> None:
        """Sign in through the page once both the UI has loaded (``load_ok`` not None) and the server has
        reported its start (the UI may load first, as the page opens before the server has started)."""
        if self.app.api is None or load_ok is None or self._signing_in:
            return
        if not load_ok:
            self.fail("the UI did not load")
            return
        self._signing_in = True
        self._sign_in()

    # ---- steps --------------------------------------------------------------------------------

    def _sign_in(self) -> None:
        from PySide6.QtCore import QTimer

        page = self.app.window.page
        page.runJavaScript(SIGN_IN_JS, 0, lambda _result: None)
        deadline = time.monotonic() + SIGN_IN_TIMEOUT_S

        def poll() -> None:
            def got(value: Any) -> None:
                if self.app.quitting:
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
                self._health()

            page.runJavaScript(SIGN_IN_RESULT_JS, 0, got)

        poll()

    def _health(self) -> None:
        api = self.app.api
        assert api is not None

        def live(status: int, payload: Any) -> None:
            if status != 200 or not isinstance(payload, dict) or payload.get("status") != "ok":
                self.fail(f"/api/health answered HTTP {status}")
                return
            api.get("/api/health/ready", ready, auth=False)

        def ready(status: int, payload: Any) -> None:
            if status != 200:
                detail = json.dumps(payload.get("checks")) if isinstance(payload, dict) else ""
                self.fail(f"not ready (HTTP {status}) {detail}")
                return
            self._screenshot()

        api.get("/api/health", live, auth=False)

    def _screenshot(self) -> None:
        from PySide6.QtCore import QTimer

        if not self.screenshot:
            self._measure()
            return
        target = self.screenshot
        deadline = time.monotonic() + SCREENSHOT_SETTLE_S
        previous: list[QImage] = []

        def try_grab() -> None:
            if self.app.quitting:
                return
            image = self.app.window.grab().toImage()
            settled = looks_rendered(image) and bool(previous) and previous[-1] == image
            previous[:] = [image]
            if not settled and time.monotonic() < deadline:
                QTimer.singleShot(100, try_grab)  # wait (bounded) until the page has painted and settled
                return
            path = Path(target).expanduser().resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            # The stubs say bytes for the format, but PySide6 accepts only str here.
            if not image.save(str(path), "PNG"):  # type: ignore[call-overload]
                self.fail(f"could not save the screenshot to {path}")
                return
            self.metrics["screenshot"] = str(path)
            self._measure()

        try_grab()

    def _measure(self) -> None:
        from PySide6.QtCore import QTimer

        def measure() -> None:
            rows = process_tree_breakdown()
            self.metrics["rss_mib"], self.metrics["pss_mib"] = (
                sum(r[1] for r in rows),
                sum(r[2] for r in rows),
            )
            self.metrics["processes"] = rows
            self.succeed()

        QTimer.singleShot(int(self.idle_seconds * 1000), measure)

    # ---- outcome ------------------------------------------------------------------------------

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
        self.app.quit(0)

    def fail(self, reason: str) -> None:
        if self.app.quitting:
            return
        self.result_line = f"self-test failed: {reason}"
        self.app.quit(1)

    def report(
        self,
        code: int,
        *,
        stray_threads: list[str],
        qapp_at: float,
        phases: Mapping[str, float],
        shutdown_seconds: float | None,
    ) -> int:
        """After the app has shut down: write the result line (stdout) and the start-up timeline and memory
        by process (stderr); return the exit code. Threads still running after shutdown fail the test."""
        if stray_threads and code == 0:
            names = ", ".join(stray_threads)
            self.result_line = f"self-test failed: threads still running after shutdown: {names}"
            code = 1
        timeline = ", ".join(f"{name} {at:.2f}" for name, at in sorted(phases.items(), key=lambda kv: kv[1]))
        sys.stderr.write(f"start-up timeline (s since process start): qapp {qapp_at:.2f}, {timeline}\n")
        if self.metrics.get("processes"):
            rows = ", ".join(f"{role} {rss:.0f}/{pss:.0f}" for role, rss, pss in self.metrics["processes"])
            sys.stderr.write(f"memory by process (MiB RSS/PSS): {rows}\n")
        line = self.result_line or "self-test failed: no result"
        if code == 0 and shutdown_seconds is not None:
            line += f", shutdown {shutdown_seconds:.2f} s"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return code
