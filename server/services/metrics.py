"""Metrics: system resources, API latency and errors, streams and Ollama, mapped to normal/warning/alert.

* CPU and memory are system-wide (what ``top`` shows, as the spec's table 6-9 means), disk is the
  file system holding the data directory (psutil).
* API latency is the time from the request to the response start (so a 60 s SSE stream is not a "slow
  request"); p50/p95/p99 come from a log-spaced histogram (about 5 % resolution) kept per second for
  15 minutes; the error rate counts 5xx only (4xx are the client's mistakes, not server errors).
* Status thresholds default to the spec's (CPU 70/90, memory 80/95, disk 80/90, latency 500/2000 ms on
  p95, error rate 1/5 %) and are configurable with ``MODELTRAIN_METRICS_THRESHOLDS``. Latency and error
  rate are judged on the last minute when it has at least ``MIN_REQUESTS`` requests, else on the last
  15 minutes, else they are normal (a rate over three requests means nothing).
* A sampler task takes one sample every ``metrics_interval_seconds`` (5 s), in a worker thread, into a
  bounded history (1 h) and raises/resolves alerts once a status has held for ``ALERT_AFTER_SAMPLES``
  samples.
* GPUs (``services/gpus.py``) are read with each sample (NVML blocks: never on the event loop); each gets
  a level from ``gpu_memory`` (80/95 %) and ``gpu_temperature`` (80/90 °C), raises its own alert
  (``metric:gpu:<index>``) and is reported as ``gpus`` in ``/api/metrics`` and as ``modeltrain_gpu_*``.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
from pydantic import ValidationError

from server import aio, log_setup
from server.health_levels import DEFAULT_THRESHOLDS, OLLAMA_NORMAL, classify, ollama_status
from server.runtime import Runtime
from server.schemas.metric import MetricsCurrent
from server.services import gpus as gpus_service
from server.services.alerts import AlertCenter, get_alert_center
from server.settings import Settings

log = logging.getLogger(__name__)

UNITS = {"cpu": "%", "memory": "%", "disk": "%", "latency": " ms", "error_rate": "%"}
WINDOWS = {"1m": 60, "15m": 900}
MIN_REQUESTS = 20
ALERT_AFTER_SAMPLES = 2
#: Histogram bucket upper bounds in ms: 0.25 ms .. ~10 min, 10 % apart.
_BOUNDS = [0.25 * 1.1**i for i in range(int(math.log(600_000 / 0.25, 1.1)) + 2)]


def resolve_thresholds(settings: Settings) -> dict[str, tuple[float, float]]:
    merged = dict(DEFAULT_THRESHOLDS)
    merged.update({k: (float(v[0]), float(v[1])) for k, v in settings.metrics_thresholds.items()})
    return merged


class RequestStats:
    """Per-second buckets (count, 5xx, latency histogram) for the last 15 minutes. Thread-safe."""

    def __init__(self, horizon_s: int = max(WINDOWS.values()), clock: Callable[[], float] = time.monotonic):
        self._horizon = horizon_s
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: deque[list] = deque()  # [second, count, errors, Counter(bucket index -> n)]
        self.total = 0
        self.total_errors = 0
        self.total_by_class: Counter[str] = Counter()

    def record(self, status: int, latency_ms: float) -> None:
        second = int(self._clock())
        index = bisect.bisect_left(_BOUNDS, max(latency_ms, 0.0))
        error = status >= 500
        with self._lock:
            if not self._buckets or self._buckets[-1][0] != second:
                self._buckets.append([second, 0, 0, Counter()])
                self._prune(second)
            bucket = self._buckets[-1]
            bucket[1] += 1
            bucket[2] += error
            bucket[3][index] += 1
            self.total += 1
            self.total_errors += error
            self.total_by_class[f"{status // 100}xx"] += 1

    def _prune(self, now_s: int) -> None:
        while self._buckets and self._buckets[0][0] <= now_s - self._horizon:
            self._buckets.popleft()

    def window(self, seconds: int) -> dict[str, float]:
        now_s = int(self._clock())
        merged: Counter[int] = Counter()
        count = errors = 0
        with self._lock:
            self._prune(now_s)
            for second, n, e, hist in reversed(self._buckets):
                if second <= now_s - seconds:
                    break
                count += n
                errors += e
                merged.update(hist)
        return {
            "requests": count,
            "errors": errors,
            "error_rate": (100.0 * errors / count) if count else 0.0,
            "p50_ms": _percentile(merged, count, 0.50),
            "p95_ms": _percentile(merged, count, 0.95),
            "p99_ms": _percentile(merged, count, 0.99),
        }


def _percentile(hist: Counter[int], count: int, q: float) -> float:
    if not count:
        return 0.0
    rank = q * count
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            upper = _BOUNDS[min(index, len(_BOUNDS) - 1)]
            lower = _BOUNDS[index - 1] if index > 0 else 0.0
            return round((lower + upper) / 2, 2)
    return round(_BOUNDS[-1], 2)


def _no_streams() -> int:
    return 0


def _unknown_state() -> str:
    return "unknown"


def _disk_path(path: Path) -> Path:
    path = path.expanduser()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


class MetricsCollector:
    """Per-app metrics: request stats fed by the access middleware, samples taken by :meth:`sample`."""

    def __init__(
        self,
        settings: Settings,
        *,
        alerts: AlertCenter,
        active_streams: Callable[[], int] = _no_streams,
        ollama_state: Callable[[], str] = _unknown_state,
        clock: Callable[[], float] = time.monotonic,
        gpu_reader: Callable[[], list[gpus_service.GpuReading]] | None = None,
    ) -> None:
        self.settings = settings
        #: Reads the GPUs (blocking); None: this collector reads none.
        self._gpu_reader = gpu_reader
        self._gpus: list[dict[str, Any]] = []
        self.alerts = alerts
        #: How many replies this process streams now, and the supervised Ollama's state (callbacks, so
        #: metrics imports neither chat nor the daemon).
        self._active_streams = active_streams
        self._ollama_state = ollama_state
        self.thresholds = resolve_thresholds(settings)
        self.requests = RequestStats(clock=clock)
        length = max(1, int(settings.metrics_history_seconds / settings.metrics_interval_seconds))
        self.history: deque[dict[str, Any]] = deque(maxlen=length)
        self._streaks: dict[str, tuple[str, int]] = {}
        self._latest: dict[str, Any] | None = None
        self._task: asyncio.Task | None = None
        self._lock = threading.Lock()
        # psutil measures CPU use since its previous call (process-wide). Only sample() reads it, so the
        # interval is always the sampling interval; reports reuse the last sampled value.
        psutil.cpu_percent(interval=None)  # prime: the first reading is relative to this call
        self._cpu_percent = 0.0

    # --- fed by the access middleware -------------------------------------------------------------
    def record_request(self, status: int, latency_ms: float) -> None:
        self.requests.record(status, latency_ms)

    # --- sampling ---------------------------------------------------------------------------------
    def current(self, *, measure_cpu: bool = False) -> dict[str, Any]:
        one, fifteen = self.requests.window(WINDOWS["1m"]), self.requests.window(WINDOWS["15m"])
        if measure_cpu:
            self._cpu_percent = float(psutil.cpu_percent(interval=None))
        return {
            "cpu_percent": self._cpu_percent,
            "memory_percent": float(psutil.virtual_memory().percent),
            "disk_percent": float(psutil.disk_usage(str(_disk_path(self.settings.data_dir))).percent),
            "latency_p50_ms": one["p50_ms"],
            "latency_p95_ms": one["p95_ms"],
            "latency_p99_ms": one["p99_ms"],
            "error_rate": round(one["error_rate"], 3),
            "requests_1m": one["requests"],
            "requests_15m": fifteen["requests"],
            "active_streams": self._active_streams(),
            "ollama_state": self._probe_ollama_state(),
            "log_errors_5m": log_setup.error_counter().recent(5),
            "windows": {"1m": one, "15m": fifteen},
        }

    def _probe_ollama_state(self) -> str:
        try:
            return self._ollama_state()
        except Exception:  # a probe must never break the sampler
            log.warning("reading the Ollama state failed", exc_info=True)
            return "unknown"

    def statuses(self, current: dict[str, Any]) -> dict[str, str]:
        one, fifteen = current["windows"]["1m"], current["windows"]["15m"]
        judged = (
            one
            if one["requests"] >= MIN_REQUESTS
            else fifteen
            if fifteen["requests"] >= MIN_REQUESTS
            else None
        )
        return {
            "cpu": classify(current["cpu_percent"], self.thresholds["cpu"]),
            "memory": classify(current["memory_percent"], self.thresholds["memory"]),
            "disk": classify(current["disk_percent"], self.thresholds["disk"]),
            "latency": classify(judged["p95_ms"], self.thresholds["latency"]) if judged else "normal",
            "error_rate": classify(judged["error_rate"], self.thresholds["error_rate"])
            if judged
            else "normal",
            "ollama": ollama_status(current["ollama_state"]),
        }

    def refresh_gpus(self) -> list[dict[str, Any]]:
        """Read the GPUs now (blocking: a worker thread) and keep them for :meth:`report`."""
        if self._gpu_reader is None:
            return []
        try:
            readings = self._gpu_reader()
        except Exception:  # a reader bug must never break the sampler
            log.warning("reading the GPUs failed", exc_info=True)
            readings = []
        judged = [gpus_service.judged(r, self.thresholds) for r in readings]
        with self._lock:
            self._gpus = judged
        return judged

    def gpus(self) -> list[dict[str, Any]]:
        """The GPUs as last read (by the sampler), each with its level."""
        with self._lock:
            return list(self._gpus)

    def sample(self) -> dict[str, Any]:
        """Take one sample: append it to the history and update the alerts. Blocking (a few syscalls and
        the GPU reads): the sampler runs it in a worker thread."""
        current = self.current(measure_cpu=True)
        status = self.statuses(current)
        gpus = self.refresh_gpus()
        now = datetime.now(timezone.utc)
        entry = {k: v for k, v in current.items() if k != "windows"}
        entry["gpus"] = [{k: g[k] for k in ("index", "name", "utilization", "memory_percent")} for g in gpus]
        with self._lock:
            self.history.append({"ts": now, **entry})
            self._latest = {"current": current, "status": status, "ts": now}
        self._update_alerts(current, status, now)
        self._update_gpu_alerts(gpus, now)
        return {"current": current, "status": status, "gpus": gpus}

    def _update_gpu_alerts(self, gpus: list[dict[str, Any]], now: datetime) -> None:
        seen = set()
        for gpu in gpus:
            metric = f"gpu:{gpu['index']}"
            seen.add(metric)
            level = gpu["level"]
            previous, streak = self._streaks.get(metric, ("normal", 0))
            streak = streak + 1 if level == previous else 1
            self._streaks[metric] = (level, streak)
            key = f"metric:{metric}"
            if level == "normal":
                self.alerts.resolve(key, now)
                continue
            if streak < ALERT_AFTER_SAMPLES:
                continue
            parts = []
            for field, value, unit in (
                ("gpu_memory", gpu["memory_percent"], "%"),
                ("gpu_temperature", gpu["temperature"], " °C"),
            ):
                warn, alert = self.thresholds[field]
                if value is not None and value >= warn:
                    limit = alert if value > alert else warn
                    what = "memory" if field == "gpu_memory" else "temperature"
                    parts.append(f"{what} is {value:.1f}{unit} (threshold {limit:g}{unit})")
            value = gpu["memory_percent"] if gpu["memory_percent"] is not None else gpu["temperature"]
            message = f"GPU {gpu['index']} ({gpu['name']}): " + ", ".join(parts)
            self.alerts.raise_alert(key, level=level, metric="gpu", value=value, message=message, now=now)
        for metric in [m for m in self._streaks if m.startswith("gpu:") and m not in seen]:
            del self._streaks[metric]  # the GPU is gone (driver unloaded): its alert goes with it
            self.alerts.resolve(f"metric:{metric}", now)

    def _update_alerts(self, current: dict[str, Any], status: dict[str, str], now: datetime) -> None:
        values = {
            "cpu": current["cpu_percent"],
            "memory": current["memory_percent"],
            "disk": current["disk_percent"],
            "latency": current["latency_p95_ms"],
            "error_rate": current["error_rate"],
            "ollama": current["ollama_state"],
        }
        for metric, level in status.items():
            previous, streak = self._streaks.get(metric, ("normal", 0))
            streak = streak + 1 if level == previous else 1
            self._streaks[metric] = (level, streak)
            key = f"metric:{metric}"
            if level == "normal":
                self.alerts.resolve(key, now)
            elif streak >= ALERT_AFTER_SAMPLES:
                value = values[metric]
                if metric == "ollama":
                    message = f"Ollama is {str(value).replace('_', ' ')}"  # "not installed"
                else:
                    warn, alert = self.thresholds[metric]
                    limit = alert if level == "alert" else warn
                    unit = UNITS[metric]
                    name = metric.replace("_", " ")
                    message = f"{name} is {value:.1f}{unit} (threshold {limit:g}{unit})"
                self.alerts.raise_alert(
                    key, level=level, metric=metric, value=value, message=message, now=now
                )

    def report(self) -> dict[str, Any]:
        """``GET /api/metrics``: fresh current values, statuses, thresholds and the history."""
        current = self.current()
        with self._lock:
            history = list(self.history)
        return {
            "current": current,
            "status": self.statuses(current),
            "thresholds": {k: {"warning": w, "alert": a} for k, (w, a) in self.thresholds.items()},
            "history": history,
            "gpus": self.gpus(),
        }

    # --- background task --------------------------------------------------------------------------
    async def _run(self) -> None:
        interval = self.settings.metrics_interval_seconds
        try:  # the GPUs at once, not a sample later (NVML initialises here, off the start-up path)
            await asyncio.to_thread(self.refresh_gpus)
        except Exception:
            log.exception("reading the GPUs failed")
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.sample)
            except Exception:  # never let one bad sample end the sampler
                log.exception("metrics sample failed")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="modeltrain-metrics")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await aio.cancel_and_wait(task)


def _runtime_streams(runtime: Runtime) -> Callable[[], int]:
    return lambda: runtime.streams.count if runtime.streams is not None else 0


def _runtime_ollama_state(runtime: Runtime) -> Callable[[], str]:
    def state() -> str:
        daemon = runtime.ollama_daemon
        return daemon.state if daemon is not None else "unknown"

    return state


def get_collector(runtime: Runtime) -> MetricsCollector:
    """The app's collector, created on first use (the lifespan creates it; a bare runtime in tests may
    not)."""
    if runtime.metrics is None:
        runtime.metrics = MetricsCollector(
            runtime.settings,
            alerts=get_alert_center(runtime),
            active_streams=_runtime_streams(runtime),
            ollama_state=_runtime_ollama_state(runtime),
            gpu_reader=gpus_service.GpuReader(runtime.settings.gpu_sysfs_root).read,
        )
    return runtime.metrics


async def start(runtime: Runtime) -> MetricsCollector:
    """Lifespan hook: create the collector (the access middleware feeds it) and start sampling."""
    collector = get_collector(runtime)
    if runtime.settings.metrics_enabled:
        collector.start()
    return collector


async def stop(runtime: Runtime) -> None:
    if runtime.metrics is not None:
        await runtime.metrics.stop()


# --------------------------------------------------------------------------------------------------
# Prometheus text exposition
# --------------------------------------------------------------------------------------------------

_STATUS_VALUE = {"normal": 0, "warning": 1, "alert": 2}


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _gpu_labels(gpu: dict[str, Any]) -> str:
    return f'{{gpu="{gpu["index"]}",name="{_label(gpu["name"])}",vendor="{_label(gpu["vendor"])}"}}'


def render_prometheus(collector: MetricsCollector) -> str:
    report = collector.report()
    cur, status = report["current"], report["status"]
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            exact = isinstance(value, int) and not isinstance(value, bool)  # bytes: every digit
            lines.append(f"{name}{labels} {value if exact else format(float(value), 'g')}")

    metric("modeltrain_cpu_percent", "gauge", "System CPU use in percent.", [("", cur["cpu_percent"])])
    metric(
        "modeltrain_memory_percent", "gauge", "System memory use in percent.", [("", cur["memory_percent"])]
    )
    metric(
        "modeltrain_disk_percent",
        "gauge",
        "Use of the data directory's disk in percent.",
        [("", cur["disk_percent"])],
    )
    latency = []
    rates = []
    counts = []
    for window, values in cur["windows"].items():
        for q in ("p50", "p95", "p99"):
            quantile = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}[q]
            latency.append((f'{{window="{window}",quantile="{quantile}"}}', values[f"{q}_ms"]))
        rates.append((f'{{window="{window}"}}', values["error_rate"]))
        counts.append((f'{{window="{window}"}}', values["requests"]))
    metric(
        "modeltrain_http_latency_ms", "gauge", "API time to response start, by window and quantile.", latency
    )
    metric("modeltrain_http_error_rate_percent", "gauge", "Share of 5xx responses in the window.", rates)
    metric("modeltrain_http_requests_window", "gauge", "Requests in the window.", counts)
    stats = collector.requests
    metric(
        "modeltrain_http_requests_total",
        "counter",
        "Requests since start, by status class.",
        [(f'{{code="{cls}"}}', n) for cls, n in sorted(stats.total_by_class.items())]
        or [('{code="2xx"}', 0)],
    )
    metric("modeltrain_active_streams", "gauge", "Chat streams in progress.", [("", cur["active_streams"])])
    metric(
        "modeltrain_ollama_up",
        "gauge",
        "1 when the local Ollama is running.",
        [("", 1 if cur["ollama_state"] in OLLAMA_NORMAL else 0)],
    )
    metric(
        "modeltrain_status",
        "gauge",
        "Status per metric: 0 normal, 1 warning, 2 alert.",
        [(f'{{metric="{m}"}}', _STATUS_VALUE[s]) for m, s in status.items()],
    )
    metric("modeltrain_alerts_active", "gauge", "Active alerts.", [("", len(collector.alerts.active()))])
    metric(
        "modeltrain_log_errors_5m",
        "gauge",
        "ERROR/CRITICAL log records of this process in the last 5 minutes (the error-log surge alert).",
        [("", cur["log_errors_5m"])],
    )
    gpus = report["gpus"]
    if gpus:
        for name_, key, help_text in (
            ("modeltrain_gpu_utilization_percent", "utilization", "GPU busy in percent."),
            ("modeltrain_gpu_memory_used_bytes", "memory_used", "GPU memory in use."),
            ("modeltrain_gpu_memory_total_bytes", "memory_total", "GPU memory in all."),
            ("modeltrain_gpu_temperature_celsius", "temperature", "GPU temperature."),
            ("modeltrain_gpu_power_watts", "power_watts", "GPU power draw."),
        ):
            samples = [(_gpu_labels(g), g[key]) for g in gpus if g[key] is not None]
            if samples:
                metric(name_, "gauge", help_text, samples)
        metric(
            "modeltrain_gpu_status",
            "gauge",
            "GPU level (memory use, temperature): 0 normal, 1 warning, 2 alert.",
            [(_gpu_labels(g), _STATUS_VALUE[g["level"]]) for g in gpus],
        )
    # Several instances behind nginx: which process this is, for joins and sums across them.
    from server import __version__
    from server.services.cluster import instance_name

    name = instance_name(collector.settings).replace("\\", "\\\\").replace('"', '\\"')
    metric(
        "modeltrain_instance_info",
        "gauge",
        "Always 1; labels name this server instance (MODELTRAIN_INSTANCE_NAME) and its version.",
        [(f'{{modeltrain_instance="{name}",version="{__version__}"}}', 1)],
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Several instances: this one's snapshot for the others, and the deployment-wide report
# --------------------------------------------------------------------------------------------------


def instance_snapshot(runtime: Runtime) -> dict[str, Any]:
    """What this instance publishes for the others (services/cluster.py): its current figures and
    statuses, and its active alerts (JSON-ready)."""
    report = get_collector(runtime).report()
    current = MetricsCurrent.model_validate(report["current"]).model_dump(mode="json")
    alerts = [a.model_dump(mode="json") for a in get_alert_center(runtime).active()]
    return {"metrics": {"current": current, "status": report["status"]}, "alerts": alerts}


def deployment_report(runtime: Runtime) -> dict[str, Any]:
    """``GET /api/metrics``: this instance's report, plus every live instance's figures, labelled."""
    from server.services import cluster

    report = get_collector(runtime).report()
    name = cluster.instance_name(runtime.settings)
    mine = {
        "instance": name,
        "host": cluster.host_name(),
        "updated_at": datetime.now(timezone.utc),
        "current": report["current"],
        "status": report["status"],
    }
    others = []
    for snap in cluster.other_snapshots(runtime):
        metrics = snap["metrics"]
        try:  # another version's snapshot may lack a field: leave it out rather than fail the page
            current = MetricsCurrent.model_validate(metrics.get("current"))
        except ValidationError:
            continue
        status = metrics.get("status") if isinstance(metrics.get("status"), dict) else {}
        others.append(
            {**{k: snap[k] for k in ("instance", "host", "updated_at")}, "current": current, "status": status}
        )
    return {**report, "instance": name, "instances": [mine, *others]}
