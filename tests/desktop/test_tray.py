"""Tray health monitor: levels from health values, icon colour/tooltip, rate-limited notifications,
the menu, the QR code, and polling a real server (degrading when endpoints are missing)."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QColor, QImage

from desktop.api_client import ApiClient
from desktop.health_poller import Check, HealthPoller, HealthState, Notifier, evaluate
from desktop.lan_dialog import LanDialog, qr_matrix, qr_pixmap
from desktop.tray import COLOURS, Tray, make_icon_pixmap
from server.embedded import EmbeddedServer
from server.health_levels import DEFAULT_THRESHOLDS, classify, ollama_status

READY = {"status": "ready", "checks": {"database": {"ok": True}, "migrations": {"ok": True}}}


def snapshot(
    cpu=10.0,
    memory=20.0,
    disk=30.0,
    latency=50.0,
    error_rate=0.0,
    ollama="running",
    live=True,
    ready=READY,
    status: dict | None = None,
) -> dict:
    """What the API answers; ``status`` is judged as the server judges it (server/health_levels.py) unless
    given, since the tray shows the server's levels and has no threshold table of its own."""
    values = {"cpu": cpu, "memory": memory, "disk": disk, "latency": latency, "error_rate": error_rate}
    judged = {name: classify(value, DEFAULT_THRESHOLDS[name]) for name, value in values.items()}
    metrics = {
        "current": {
            "cpu_percent": cpu,
            "memory_percent": memory,
            "disk_percent": disk,
            "latency_p95_ms": latency,
            "error_rate": error_rate,
            "ollama_state": ollama,
        },
        "status": status if status is not None else {**judged, "ollama": ollama_status(ollama)},
    }
    return {"live": live, "ready": ready, "metrics": metrics}


@pytest.mark.parametrize(
    ("check", "values", "expected"),
    [
        ("cpu", {"cpu": 69.9}, "normal"),
        ("cpu", {"cpu": 70}, "warning"),
        ("cpu", {"cpu": 90.1}, "alert"),
        ("memory", {"memory": 79}, "normal"),
        ("memory", {"memory": 80}, "warning"),
        ("memory", {"memory": 96}, "alert"),
        ("disk", {"disk": 79}, "normal"),
        ("disk", {"disk": 85}, "warning"),
        ("disk", {"disk": 91}, "alert"),
        ("latency", {"latency": 499}, "normal"),
        ("latency", {"latency": 500}, "warning"),
        ("latency", {"latency": 2500}, "alert"),
        ("error_rate", {"error_rate": 0.5}, "normal"),
        ("error_rate", {"error_rate": 1}, "warning"),
        ("error_rate", {"error_rate": 7}, "alert"),
        ("ollama", {"ollama": "crashed"}, "alert"),
        ("ollama", {"ollama": "starting"}, "warning"),
        ("ollama", {"ollama": "external"}, "normal"),
    ],
)
def test_thresholds(check: str, values: dict, expected: str) -> None:
    state = evaluate(snapshot(**values))
    assert state.checks[check].level == expected
    assert state.level == expected


def test_server_judgement_wins_and_missing_parts_are_unknown() -> None:
    # Custom thresholds on the server: the tray shows its levels, whatever the values would give here.
    custom = {
        "cpu": "normal",
        "memory": "normal",
        "disk": "normal",
        "latency": "alert",
        "error_rate": "normal",
        "ollama": "normal",
    }
    assert evaluate(snapshot(status=custom)).checks["latency"].level == "alert"
    assert evaluate(snapshot(cpu=95, status=custom)).checks["cpu"].level == "normal"
    no_status = snapshot(cpu=95)
    del no_status["metrics"]["status"]
    assert evaluate(no_status).checks["cpu"] == Check("cpu", "unknown", "95%")
    down = evaluate({"live": False})
    assert down.level == "alert" and down.checks["server"].level == "alert"
    no_metrics = evaluate({"live": True, "ready": READY, "metrics": None})
    assert no_metrics.level == "normal"
    assert no_metrics.checks["cpu"].level == "unknown"
    assert evaluate({}).level == "unknown"
    db_down = evaluate(
        {"live": True, "ready": {"status": "not_ready", "checks": {"database": {"ok": False}}}}
    )
    assert db_down.level == "alert" and db_down.checks["database"].level == "alert"


def _centre_colour(level: str) -> QColor:
    image: QImage = make_icon_pixmap(level, 64).toImage()
    return image.pixelColor(12, 32)  # inside the badge, left of the letter


@pytest.mark.parametrize(
    ("values", "level"), [({}, "normal"), ({"disk": 85}, "warning"), ({"cpu": 95}, "alert")]
)
def test_tray_follows_injected_health(qtbot, values: dict, level: str) -> None:
    tray = Tray(close_to_tray=True, lang="en")
    poller = HealthPoller(ApiClient("http://127.0.0.1:9", None), notifier=Notifier(min_interval=0))
    poller.updated.connect(tray.apply_health)
    poller.notify.connect(tray.notify)
    poller.inject(snapshot(**values))
    assert tray.level == level
    assert tray.icon.toolTip().startswith(f"ModelTrain — {level}")
    assert "CPU:" in tray.icon.toolTip()
    assert _centre_colour(level) == COLOURS[level]
    assert (tray.shown_messages != []) == (level != "normal")
    poller.inject({"live": False})
    assert tray.level == "alert" and _centre_colour("unknown") == COLOURS["unknown"]
    tray.dispose()


def test_notifications_on_worse_and_recovered_are_rate_limited() -> None:
    now = [1000.0]
    notifier = Notifier(min_interval=60, clock=lambda: now[0], lang="en")
    assert notifier.update(evaluate(snapshot())) is None  # all normal: nothing to say
    worse = notifier.update(evaluate(snapshot(cpu=95)))
    assert worse is not None and worse.level == "alert" and "CPU: alert" in worse.message
    now[0] += 5
    assert notifier.update(evaluate(snapshot(cpu=95))) is None  # unchanged
    assert notifier.update(evaluate(snapshot(cpu=10))) is None  # recovered, but rate-limited (5 s later)
    assert notifier.update(evaluate(snapshot(cpu=96))) is None  # flapped back: still what the user was told
    now[0] += 60
    recovered = notifier.update(evaluate(snapshot(cpu=10)))
    assert recovered is not None and "CPU recovered" in recovered.message
    # Different checks are limited separately and merged into one message, worst first.
    many = notifier.update(evaluate(snapshot(memory=85, disk=95)))
    assert many is not None and many.level == "alert"
    assert many.message.splitlines()[0].startswith("Disk: alert") and "Memory: warning" in many.message
    # Getting better but not normal is silent.
    now[0] += 120
    assert notifier.update(evaluate(snapshot(memory=85, disk=85))) is None


GIB = 1024**3


def with_gpus(*levels: str, **values) -> dict:
    """A snapshot whose /api/metrics lists one GPU per level (as the server judged it)."""
    snap = snapshot(**values)
    snap["metrics"]["gpus"] = [
        {
            "index": i,
            "vendor": "nvidia",
            "name": f"NVIDIA H200 #{i}",
            "utilization": 37.0,
            "memory_used": 14 * GIB,
            "memory_total": 141 * GIB,
            "temperature": 41.0,
            "level": level,
        }
        for i, level in enumerate(levels)
    ]
    return snap


@pytest.mark.parametrize(
    ("levels", "worst"),
    [((), "normal"), (("normal", "warning"), "warning"), (("alert", "normal"), "alert")],
)
def test_tray_tooltip_has_a_line_per_gpu_and_takes_the_worst_colour(qtbot, levels: tuple, worst: str) -> None:
    tray = Tray(close_to_tray=True, lang="en")
    poller = HealthPoller(ApiClient("http://127.0.0.1:9", None), notifier=Notifier(min_interval=0))
    poller.updated.connect(tray.apply_health)
    poller.notify.connect(tray.notify)
    poller.inject(with_gpus(*levels))
    assert tray.level == worst
    lines = tray.icon.toolTip().splitlines()
    gpu_lines = [line for line in lines if line.startswith("GPU ")]
    assert gpu_lines == [
        f"GPU {i} (NVIDIA H200 #{i}): 37% · 14.0/141.0 GiB · 41 °C ({level})"
        for i, level in enumerate(levels)
    ]
    assert lines.index("CPU: 10% (normal)") < lines.index(gpu_lines[0]) if gpu_lines else True
    if worst != "normal":
        (note,) = tray.shown_messages
        assert (
            note.level == worst
            and f"GPU {levels.index(worst)} (NVIDIA H200 #{levels.index(worst)})" in note.message
        )
    tray.dispose()


def test_gpus_missing_or_malformed_add_no_check() -> None:
    assert not [n for n in evaluate(snapshot()).checks if n.startswith("gpu")]
    odd = with_gpus("normal")
    odd["metrics"]["gpus"] = [{"name": "no index"}, "junk", {"index": 1, "level": "bogus"}]
    state = evaluate(odd)
    assert [n for n in state.checks if n.startswith("gpu")] == ["gpu:1"]
    assert state.checks["gpu:1"] == Check("gpu:1", "unknown", "", "GPU 1") and state.level == "normal"


def test_notification_text_in_chinese() -> None:
    note = Notifier(min_interval=0, lang="zh").update(evaluate(snapshot(disk=95)))
    assert note is not None and "磁盘" in note.message and "告警" in note.message


def test_menu_works_without_a_system_tray(qtbot) -> None:
    tray = Tray(close_to_tray=True, lang="en")
    assert tray.available is False  # offscreen: no tray, the logic still runs
    emitted: list[str] = []
    tray.ollama_requested.connect(emitted.append)
    tray.lan_enable_requested.connect(lambda: emitted.append("lan-on"))
    tray.lan_disable_requested.connect(lambda: emitted.append("lan-off"))
    tray.quit_requested.connect(lambda: emitted.append("quit"))
    tray.open_requested.connect(lambda: emitted.append("open"))
    tray.close_to_tray_changed.connect(lambda v: emitted.append(f"tray={v}"))
    for action in tray.ollama_actions.values():
        action.trigger()
    assert not tray.lan_toggle_action.isEnabled()  # LAN state unknown/unavailable
    tray.set_lan({"enabled": False, "url": None})
    tray.lan_toggle_action.trigger()
    tray.set_lan({"enabled": True, "url": "http://192.168.1.20:8765"})
    assert tray.lan_copy_action.isVisible() and "192.168.1.20:8765" in tray.lan_copy_action.text()
    tray.lan_copy_action.trigger()
    from PySide6.QtGui import QGuiApplication

    assert QGuiApplication.clipboard().text() == "http://192.168.1.20:8765"
    tray.lan_toggle_action.trigger()
    tray.close_to_tray_action.trigger()
    tray.open_action.trigger()
    tray.quit_action.trigger()
    assert emitted == ["start", "stop", "restart", "lan-on", "lan-off", "tray=False", "open", "quit"]
    tray.dispose()


def test_qr_code_matches_the_lan_url(qtbot) -> None:
    url = "https://192.168.1.20:8765"
    matrix = qr_matrix(url)
    pixmap = qr_pixmap(url, module_px=4)
    image = pixmap.toImage()
    assert pixmap.width() == pixmap.height() == len(matrix) * 4
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            colour = image.pixelColor(x * 4 + 2, y * 4 + 2)
            assert colour == (QColor("black") if dark else QColor("white"))
    dialog = LanDialog(
        {
            "enabled": True,
            "url": url,
            "ca_fingerprint_sha256": "AB:CD",
            "ca_download_url": "http://192.168.1.20:8765/api/lan/ca.crt",
        },
        "en",
    )
    qtbot.addWidget(dialog)
    assert dialog.ca_label is not None
    assert "AB:CD" in dialog.ca_label.text() and "/api/lan/ca.crt" in dialog.ca_label.text()
    assert dialog.url_label.text() == url and not dialog.qr_label.pixmap().isNull()


def test_lan_dialog_needs_consent_and_password(qtbot) -> None:
    dialog = LanDialog({"enabled": False, "host": "0.0.0.0", "port": 8765}, "en")
    qtbot.addWidget(dialog)
    assert not dialog.enable_button.isEnabled()
    dialog.password_edit.setText("secret-password-1")
    assert not dialog.enable_button.isEnabled()  # no consent yet
    dialog.confirm_box.setChecked(True)
    dialog.host_edit.setText("not an ip")
    assert not dialog.enable_button.isEnabled()
    dialog.host_edit.setText("10.0.0.5")
    with qtbot.waitSignal(dialog.submitted, timeout=1000) as got:
        dialog.enable_button.click()
    assert got.args == ["10.0.0.5", 8765, "secret-password-1"]
    dialog.show_error("the password is wrong")
    assert "the password is wrong" in dialog.error_label.text() and dialog.password_edit.text() == ""


def test_poller_against_a_real_server(qtbot, embedded: EmbeddedServer) -> None:
    client = ApiClient(embedded.url, embedded.desktop_token)
    poller = HealthPoller(client, interval_ms=60000, notifier=Notifier(min_interval=0))
    lan: list = []
    poller.lan_status.connect(lan.append)
    with qtbot.waitSignal(poller.updated, timeout=20000) as got:
        poller.start()
    poller.stop()
    state: HealthState = got.args[0]
    assert client.signed_in  # signed in with the desktop token over HTTP
    assert state.checks["server"].level == "normal"
    assert state.checks["database"].level == "normal"
    assert state.level in ("normal", "warning", "alert")  # real machine values; endpoints may be missing
    assert lan and lan[0]["enabled"] is False  # GET /api/lan as the desktop owner


def test_poller_reports_a_stopped_server(qtbot, make_desktop_settings) -> None:
    server = EmbeddedServer(make_desktop_settings())
    server.start(timeout=60)
    client = ApiClient(server.url, server.desktop_token)
    server.stop()
    poller = HealthPoller(client, interval_ms=60000, notifier=Notifier(min_interval=0))
    notes: list = []
    poller.notify.connect(notes.append)
    with qtbot.waitSignal(poller.updated, timeout=20000) as got:
        poller.poll_now()
    assert got.args[0].level == "alert" and got.args[0].checks["server"].level == "alert"
    assert notes and "Server" in notes[0].message


def test_api_client_refreshes_before_signing_in_again(qtbot, embedded: EmbeddedServer) -> None:
    """An expired access token is replaced through the refresh cookie, not a new desktop sign-in."""
    client = ApiClient(embedded.url, embedded.desktop_token)
    answers: list = []
    client.get("/api/users/me", lambda status, body: answers.append((status, body)))
    qtbot.waitUntil(lambda: len(answers) == 1, timeout=20000)
    assert answers[0][0] == 200 and answers[0][1]["email"] == "admin@example.com"
    token = embedded.desktop_token
    families = embedded.runtime.desktop_token.session_count
    client.set_access_token("not-a-valid-token")  # as if it had expired
    client.get("/api/users/me", lambda status, body: answers.append((status, body)))
    qtbot.waitUntil(lambda: len(answers) == 2, timeout=20000)
    assert answers[1][0] == 200
    assert embedded.runtime.desktop_token.session_count == families  # no new sign-in
    assert embedded.desktop_token == token
