"""The --self-test harness in itself: its outcome line, its report, when it signs in, and its
instrumentation. The whole run, as a process, is in test_app_process.py."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtGui import QColor, QImage, QPainter

from desktop import self_test
from desktop.self_test import SelfTest


class FakeApp:
    """What the harness uses of DesktopApp: ``api``, ``window``, ``quitting`` and ``quit``."""

    def __init__(self) -> None:
        self.api: Any = None
        self.window: Any = None
        self.quitting = False
        self.exit_codes: list[int] = []

    def quit(self, code: int = 0) -> None:
        if self.quitting:
            return
        self.quitting = True
        self.exit_codes.append(code)


def _harness(**kwargs: Any) -> tuple[SelfTest, FakeApp]:
    app = FakeApp()
    return SelfTest(app, **kwargs), app  # type: ignore[arg-type]


def test_the_first_failure_is_the_reason_and_quits_with_1() -> None:
    harness, app = _harness()
    harness.fail("the UI did not load")
    harness.fail("timed out")  # e.g. the timeout firing while the app shuts down
    assert harness.result_line == "self-test failed: the UI did not load"
    assert app.exit_codes == [1]


def test_success_is_one_line_with_the_measurements() -> None:
    harness, app = _harness()
    harness.metrics.update(
        ui_loaded_s=1.234,
        interactive_s=1.5,
        cpu_s=0.75,
        user="admin@example.com",
        rss_mib=301.4,
        pss_mib=250.6,
        screenshot="/tmp/shot.png",
    )
    harness.succeed()
    assert harness.result_line == (
        "self-test ok: ui 1.23 s, interactive 1.50 s (cpu 0.75 s), signed in as admin@example.com, "
        "health ready, rss 301 MiB (pss 251 MiB), screenshot /tmp/shot.png"
    )
    assert app.exit_codes == [0]


def test_it_signs_in_only_once_the_ui_has_loaded_and_the_server_has_started() -> None:
    harness, app = _harness()
    harness.proceed(False)  # the UI failed to load before the server had started: not decided yet
    assert harness.result_line is None
    assert app.exit_codes == []
    app.api = object()
    harness.proceed(None)  # the server has started, the UI is still loading
    assert harness.result_line is None
    assert app.exit_codes == []
    harness.proceed(False)
    assert harness.result_line == "self-test failed: the UI did not load"
    assert app.exit_codes == [1]


def test_report_writes_one_result_line_and_the_timeline(capsys: pytest.CaptureFixture[str]) -> None:
    harness, _app = _harness()
    harness.succeed()
    harness.metrics["processes"] = [("app", 200.4, 150.2), ("renderer", 90.0, 60.0)]
    code = harness.report(
        0,
        stray_threads=[],
        qapp_at=0.4,
        phases={"ui loaded": 1.2, "window shown": 0.6},
        shutdown_seconds=0.25,
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert out.count("\n") == 1
    assert out.startswith("self-test ok: ")
    assert out.endswith(", shutdown 0.25 s\n")
    assert "start-up timeline (s since process start): qapp 0.40, window shown 0.60, ui loaded 1.20\n" in err
    assert "memory by process (MiB RSS/PSS): app 200/150, renderer 90/60\n" in err


def test_threads_left_after_shutdown_fail_the_self_test(capsys: pytest.CaptureFixture[str]) -> None:
    harness, _app = _harness()
    harness.succeed()
    stray = ["worker-1", "worker-2"]
    code = harness.report(0, stray_threads=stray, qapp_at=0.4, phases={}, shutdown_seconds=0.2)
    out, _err = capsys.readouterr()
    assert code == 1
    assert out == "self-test failed: threads still running after shutdown: worker-1, worker-2\n"


def test_report_without_a_result_is_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    harness, _app = _harness()
    assert harness.report(1, stray_threads=[], qapp_at=0.4, phases={}, shutdown_seconds=0.2) == 1
    assert capsys.readouterr().out == "self-test failed: no result\n"


def test_helper_processes_are_named_by_their_role() -> None:
    assert self_test.helper_role(["QtWebEngineProcess", "--type=gpu-process"], False) == "gpu-process"
    assert self_test.helper_role(["QtWebEngineProcess", "--type=zygote"], False) == "zygote"
    # A renderer forked by the zygote keeps the zygote's command line.
    assert self_test.helper_role(["QtWebEngineProcess", "--type=zygote"], True) == "renderer"
    assert self_test.helper_role(["something-else"], False) == "helper"


def test_process_measurements() -> None:
    rows = self_test.process_tree_breakdown()
    assert rows[0][0] == "app"
    assert rows[0][1] > 0
    assert self_test.process_cpu_seconds() > 0
    assert self_test.seconds_since_process_start() > 0


def test_a_screenshot_counts_once_the_page_has_painted(qapp) -> None:
    assert not self_test.looks_rendered(QImage())
    image = QImage(200, 100, QImage.Format.Format_RGB32)
    image.fill(QColor("white"))
    assert not self_test.looks_rendered(image)  # a blank window
    painter = QPainter(image)
    painter.fillRect(0, 0, 100, 50, QColor("navy"))
    painter.fillRect(100, 50, 100, 50, QColor("orange"))
    painter.end()
    assert self_test.looks_rendered(image)
