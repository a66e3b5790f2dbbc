"""Metrics and alerts: thresholds, rolling windows, sampler history, /api/metrics, /metrics, /api/alerts."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from fastapi.testclient import TestClient

from server.services import gpus, metrics
from server.services.alerts import AlertCenter
from server.services.gpus import GpuReading
from server.settings import Settings
from tests.server.conftest import BASE_URL, bearer


class Tick:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rolling_windows_percentiles_and_error_rate() -> None:
    clock = Tick()
    stats = metrics.RequestStats(clock=clock)
    for i in range(100):
        stats.record(200, 100.0 if i < 90 else 1500.0)
    for _ in range(5):
        stats.record(503, 50.0)
    for _ in range(5):
        stats.record(404, 20.0)  # client errors are not server errors
    one = stats.window(60)
    assert one["requests"] == 110 and one["errors"] == 5
    assert one["error_rate"] == pytest.approx(100 * 5 / 110)
    assert one["p50_ms"] == pytest.approx(100, rel=0.1)
    assert one["p95_ms"] == pytest.approx(1500, rel=0.1)
    assert one["p99_ms"] == pytest.approx(1500, rel=0.1)
    clock.t += 61
    stats.record(200, 10.0)
    assert stats.window(60)["requests"] == 1
    assert stats.window(900)["requests"] == 111
    clock.t += 900
    assert stats.window(900)["requests"] == 0 and stats.window(900)["p95_ms"] == 0.0
    assert stats.total == 111 and stats.total_by_class["5xx"] == 5


def _collector(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    cpu: float,
    mem: float,
    disk: float,
    **probes: Callable[[], Any],
) -> metrics.MetricsCollector:
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: cpu)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(percent=mem))
    monkeypatch.setattr(psutil, "disk_usage", lambda path: SimpleNamespace(percent=disk))
    return metrics.MetricsCollector(settings, alerts=AlertCenter(), **probes)


def test_statuses_and_alerts_follow_samples(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    c = _collector(settings, monkeypatch, cpu=95, mem=85, disk=50)
    first = c.sample()
    assert first["status"]["cpu"] == "alert" and first["status"]["memory"] == "warning"
    assert first["status"]["disk"] == "normal"
    assert c.alerts.active() == []  # one sample is not enough (no alert on a blip)
    c.sample()
    active = {a.metric: a for a in c.alerts.active()}
    assert set(active) == {"cpu", "memory"}
    assert active["cpu"].level == "alert" and active["cpu"].value == 95
    assert "threshold 90%" in active["cpu"].message
    assert active["memory"].level == "warning"
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: 10.0)
    c.sample()
    assert {a.metric for a in c.alerts.active()} == {"memory"}
    resolved = [a for a in c.alerts.recent() if a.metric == "cpu"]
    assert resolved and resolved[0].until is not None


def test_latency_and_errors_need_enough_requests(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    c = _collector(settings, monkeypatch, cpu=1, mem=1, disk=1)
    for _ in range(3):
        c.record_request(500, 3000.0)
    status = c.statuses(c.current())
    assert status["latency"] == "normal" and status["error_rate"] == "normal"  # 3 requests mean nothing
    for _ in range(30):
        c.record_request(200, 800.0)
    status = c.statuses(c.current())
    assert status["latency"] == "alert"  # p95 of 33 requests is one of the 3 s ones
    assert status["error_rate"] == "alert"  # 3 / 33 = 9 %
    for _ in range(30):
        c.record_request(200, 800.0)
    status = c.statuses(c.current())
    assert status["latency"] == "warning"  # p95 of 63 is 800 ms
    assert status["error_rate"] == "warning"  # 3 / 63 = 4.8 %


def test_thresholds_are_configurable(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELTRAIN_METRICS_THRESHOLDS", '{"cpu": [20, 40], "latency": [50, 100]}')
    settings = make_settings()
    c = _collector(settings, monkeypatch, cpu=30, mem=1, disk=1)
    assert c.thresholds["cpu"] == (20.0, 40.0) and c.thresholds["memory"] == (80.0, 95.0)
    assert c.sample()["status"]["cpu"] == "warning"
    monkeypatch.setenv("MODELTRAIN_METRICS_THRESHOLDS", '{"cpu": [90, 70]}')
    with pytest.raises(Exception, match="warning <= alert"):
        make_settings()


def test_history_is_bounded(make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(metrics_interval_seconds=5, metrics_history_seconds=60)
    c = _collector(settings, monkeypatch, cpu=1, mem=1, disk=1)
    for _ in range(30):
        c.sample()
    assert len(c.history) == 12
    assert set(c.history[-1]) >= {"ts", "cpu_percent", "latency_p95_ms", "error_rate", "active_streams"}


def test_streams_and_ollama_state_from_probes(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    state = {"streams": 3, "ollama": "crashed"}
    c = _collector(
        settings,
        monkeypatch,
        cpu=1,
        mem=1,
        disk=1,
        active_streams=lambda: state["streams"],
        ollama_state=lambda: state["ollama"],
    )
    sample = c.sample()
    assert sample["current"]["active_streams"] == 3
    assert sample["current"]["ollama_state"] == "crashed" and sample["status"]["ollama"] == "alert"
    state["ollama"] = "running"
    assert c.sample()["status"]["ollama"] == "normal"


def test_a_failing_ollama_probe_reads_unknown(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> str:
        raise RuntimeError("daemon lock poisoned")

    c = _collector(settings, monkeypatch, cpu=1, mem=1, disk=1, ollama_state=broken)
    assert c.sample()["current"]["ollama_state"] == "unknown"
    bare = _collector(settings, monkeypatch, cpu=1, mem=1, disk=1)
    assert bare.sample()["current"]["active_streams"] == 0


def test_app_collector_reads_the_runtime(app) -> None:
    runtime = app.state.runtime
    collector = metrics.get_collector(runtime)
    assert collector is metrics.get_collector(runtime) and collector.alerts is runtime.alerts
    assert collector.current()["active_streams"] == runtime.streams.count == 0
    runtime.ollama_daemon = SimpleNamespace(state="crashed")
    assert collector.current()["ollama_state"] == "crashed"


def test_metrics_api_counts_requests(client: TestClient, admin_token: str, user_token: str) -> None:
    for _ in range(5):
        client.get("/api/health")
    r = client.get("/api/metrics", headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    body = r.json()
    cur = body["current"]
    assert cur["requests_1m"] >= 5 and cur["requests_15m"] >= cur["requests_1m"]
    for key in (
        "cpu_percent",
        "memory_percent",
        "disk_percent",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "error_rate",
        "active_streams",
        "ollama_state",
    ):
        assert key in cur
    assert set(body["status"]) == {"cpu", "memory", "disk", "latency", "error_rate", "ollama"}
    assert body["thresholds"]["cpu"] == {"warning": 70.0, "alert": 90.0}
    assert body["thresholds"]["error_rate"] == {"warning": 1.0, "alert": 5.0}
    assert isinstance(body["history"], list)
    assert client.get("/api/metrics", headers=bearer(user_token)).status_code == 403
    assert client.get("/api/metrics").status_code == 401


def test_sampler_runs_in_the_app(make_settings: Callable[..., Settings], admin_token: str) -> None:
    from server.app import create_app
    from tests.server.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, login

    settings = make_settings(metrics_interval_seconds=0.05)
    with TestClient(create_app(settings), base_url=BASE_URL) as c:
        collector = c.app.state.runtime.metrics
        import time

        deadline = time.monotonic() + 10
        while len(collector.history) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(collector.history) >= 3
        token = login(c, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert len(c.get("/api/metrics", headers=bearer(token)).json()["history"]) >= 3


def test_prometheus_endpoint_access(client: TestClient, admin_token: str, user_token: str, app) -> None:
    # the default TestClient peer is not a loopback address: a token is needed
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(user_token)).status_code == 403
    r = client.get("/metrics", headers=bearer(admin_token))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in (
        "modeltrain_cpu_percent",
        "modeltrain_memory_percent",
        "modeltrain_disk_percent",
        "modeltrain_http_latency_ms",
        "modeltrain_http_error_rate_percent",
        "modeltrain_http_requests_total",
        "modeltrain_active_streams",
        "modeltrain_ollama_up",
        "modeltrain_status",
    ):
        assert f"# TYPE {name} " in text
    assert re.search(
        r'^modeltrain_http_latency_ms\{window="1m",quantile="0.95"\} [0-9.e+-]+$', text, re.MULTILINE
    )
    assert re.search(r'^modeltrain_status\{metric="cpu"\} [012]$', text, re.MULTILINE)

    local = TestClient(app, base_url=BASE_URL, client=("127.0.0.1", 40000))
    assert local.get("/metrics").status_code == 200
    assert local.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 401
    assert local.get("/metrics", headers={"Forwarded": "for=203.0.113.9"}).status_code == 401
    assert local.get("/metrics", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    ipv6 = TestClient(app, base_url="http://[::1]:8000", client=("::1", 40000))
    assert ipv6.get("/metrics").status_code == 200
    lan_peer = TestClient(app, base_url=BASE_URL, client=("192.0.2.10", 40000))
    assert lan_peer.get("/metrics").status_code == 401


def test_prometheus_behind_a_trusted_local_proxy_needs_a_token(
    make_settings: Callable[..., Settings],
) -> None:
    from server.app import create_app

    settings = make_settings(trusted_proxies=["127.0.0.1/32"])
    with TestClient(create_app(settings), base_url=BASE_URL, client=("127.0.0.1", 40000)) as c:
        assert c.get("/metrics").status_code == 401


def test_alert_feed(client: TestClient, admin_token: str, user_token: str, app) -> None:
    center = app.state.runtime.alerts
    center.raise_alert("metric:disk", level="warning", metric="disk", value=85.0, message="disk is 85.0%")
    center.raise_alert("metric:cpu", level="alert", metric="cpu", value=97.0, message="cpu is 97.0%")
    center.resolve("metric:cpu")
    r = client.get("/api/alerts", headers=bearer(admin_token))
    assert r.status_code == 200
    body = r.json()
    assert [(a["metric"], a["level"]) for a in body["active"]] == [("disk", "warning")]
    assert {"level", "metric", "value", "since", "message"} <= set(body["active"][0])
    cpu = [a for a in body["recent"] if a["metric"] == "cpu"]
    assert cpu and cpu[0]["until"] is not None
    assert client.get("/api/alerts", headers=bearer(user_token)).status_code == 403
    assert client.get("/api/alerts").status_code == 401


def test_responses_carry_a_request_id_even_when_refused(client: TestClient) -> None:
    r = client.get("/api/health", headers={"Host": "evil.example"})
    assert r.status_code == 403
    assert len(r.headers["x-request-id"]) == 32


def test_reports_show_the_sampled_cpu_and_never_reset_the_sampling_interval(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = _collector(settings, monkeypatch, cpu=77.0, mem=10, disk=10)
    c.sample()
    calls: list[float | None] = []

    def counting(interval=None):
        calls.append(interval)
        return 0.0  # what a second psutil call right after the first would say

    monkeypatch.setattr(psutil, "cpu_percent", counting)
    for _ in range(3):
        report = c.report()
        assert report["current"]["cpu_percent"] == 77.0 and report["status"]["cpu"] == "warning"
    assert calls == []  # only the sampler measures CPU


# --- GPUs (services/gpus.py feeds the collector) ---------------------------------------------------

GIB = 1024**3


def _gpu(index: int = 0, used: int = 10 * GIB, temp: float = 50.0) -> GpuReading:
    return GpuReading(index, "nvidia", f"Fake GPU {index}", 42.0, used, 20 * GIB, temp, 150.0, 300.0)


def test_gpus_are_judged_sampled_and_alerted(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    readings = [_gpu(0), _gpu(1, used=17 * GIB)]  # 85 %: warning
    c = _collector(settings, monkeypatch, cpu=1, mem=1, disk=1, gpu_reader=lambda: list(readings))
    first = c.sample()
    assert [g["level"] for g in first["gpus"]] == ["normal", "warning"]
    assert c.history[-1]["gpus"][1] == {
        "index": 1,
        "name": "Fake GPU 1",
        "utilization": 42.0,
        "memory_percent": 85.0,
    }
    assert c.alerts.active() == []  # one sample is not enough
    c.sample()
    (alert,) = c.alerts.active()
    assert (alert.key, alert.metric, alert.level, alert.value) == ("metric:gpu:1", "gpu", "warning", 85.0)
    assert alert.message == "GPU 1 (Fake GPU 1): memory is 85.0% (threshold 80%)"
    readings[1] = _gpu(1, temp=93)
    c.sample()
    c.sample()  # a new level holds for two samples too
    (alert,) = c.alerts.active()
    assert alert.level == "alert" and "temperature is 93.0 °C (threshold 90 °C)" in alert.message
    readings.pop()  # the GPU went away: its alert resolves
    c.sample()
    assert c.alerts.active() == []
    assert [a.until is not None for a in c.alerts.recent() if a.metric == "gpu"] == [True]


def test_no_gpu_reader_and_a_failing_one_mean_no_gpus(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _collector(settings, monkeypatch, cpu=1, mem=1, disk=1).sample()["gpus"] == []

    def broken() -> list[GpuReading]:
        raise RuntimeError("driver bug")

    c = _collector(settings, monkeypatch, cpu=1, mem=1, disk=1, gpu_reader=broken)
    assert c.sample()["gpus"] == [] and c.report()["gpus"] == []


def _fake_gpu_tree(root: Path, used: int) -> Path:
    device = root / "card0" / "device"
    (device / "hwmon" / "hwmon0").mkdir(parents=True)
    (device / "gpu_busy_percent").write_text("63\n")
    (device / "mem_info_vram_used").write_text(f"{used}\n")
    (device / "mem_info_vram_total").write_text(f"{16 * GIB}\n")
    (device / "product_name").write_text('Fake "Radeon"\n')
    (device / "hwmon" / "hwmon0" / "temp1_input").write_text("61000\n")
    (device / "hwmon" / "hwmon0" / "power1_average").write_text("120000000\n")
    return root


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(gpus, "_shared", gpus.NvmlSource())


def test_metrics_api_lists_the_gpus(
    make_settings: Callable[..., Settings], tmp_path: Path, no_nvml: None, admin_token: str
) -> None:
    from server.app import create_app
    from tests.server.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, login

    settings = make_settings(gpu_sysfs_root=_fake_gpu_tree(tmp_path / "drm", used=int(15.5 * GIB)))
    with TestClient(create_app(settings), base_url=BASE_URL) as c:
        token = login(c, ADMIN_EMAIL, ADMIN_PASSWORD)
        collector = c.app.state.runtime.metrics
        deadline = time.monotonic() + 10  # the sampler reads the GPUs as it starts, before its first sample
        while not collector.gpus() and time.monotonic() < deadline:
            time.sleep(0.02)
        body = c.get("/api/metrics", headers=bearer(token)).json()
        (gpu,) = body["gpus"]
        assert gpu == {
            "index": 0,
            "vendor": "amd",
            "name": 'Fake "Radeon"',
            "utilization": 63.0,
            "memory_used": int(15.5 * GIB),
            "memory_total": 16 * GIB,
            "memory_percent": 96.88,
            "temperature": 61.0,
            "power_watts": 120.0,
            "power_limit_watts": None,
            "level": "alert",
        }
        assert body["thresholds"]["gpu_memory"] == {"warning": 80.0, "alert": 95.0}
        assert body["thresholds"]["gpu_temperature"] == {"warning": 80.0, "alert": 90.0}

        text = c.get("/metrics", headers=bearer(token)).text
        labels = r'\{gpu="0",name="Fake \\"Radeon\\"",vendor="amd"\}'
        for line in (
            rf"modeltrain_gpu_utilization_percent{labels} 63",
            rf"modeltrain_gpu_memory_used_bytes{labels} {int(15.5 * GIB)}",
            rf"modeltrain_gpu_memory_total_bytes{labels} {16 * GIB}",
            rf"modeltrain_gpu_temperature_celsius{labels} 61",
            rf"modeltrain_gpu_power_watts{labels} 120",
            rf"modeltrain_gpu_status{labels} 2",
        ):
            assert re.search(f"^{line}$", text, re.MULTILINE), line
        assert "# TYPE modeltrain_gpu_utilization_percent gauge" in text

        collector.sample()
        collector.sample()
        alerts = c.get("/api/alerts", headers=bearer(token)).json()
        gpu_alerts = [a for a in alerts["active"] if a["metric"] == "gpu"]
        assert [(a["key"], a["level"]) for a in gpu_alerts] == [("metric:gpu:0", "alert")]
        samples = c.get("/api/metrics", headers=bearer(token)).json()["history"]
        assert samples[-1]["gpus"] == [
            {"index": 0, "name": 'Fake "Radeon"', "utilization": 63.0, "memory_percent": 96.88}
        ]


def test_without_a_gpu_nothing_is_listed(client: TestClient, admin_token: str, no_nvml: None) -> None:
    body = client.get("/api/metrics", headers=bearer(admin_token)).json()
    assert body["gpus"] == []
    assert "modeltrain_gpu_" not in client.get("/metrics", headers=bearer(admin_token)).text
