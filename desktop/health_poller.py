"""Health for the tray: poll the server's health/metrics/alerts API, judge it, and say when it changes.

* :func:`evaluate` turns one snapshot of API answers into levels per check (normal / warning / alert /
  unknown). The levels of the resources, latency, error rate and Ollama are the server's own judgement
  (``/api/metrics`` ``status``): it alone knows the configured thresholds and the request counts, so the
  threshold table exists once, in ``server/health_levels.py``. Endpoints that are missing (404) or refused
  just leave their checks ``unknown``. Each GPU of ``/api/metrics`` ``gpus`` is one more check
  (``gpu:<index>``, its level the server's), so the colour takes the worst GPU too.
* :class:`Notifier` decides which changes deserve a notification: a check got worse, or recovered to
  normal; at most one per check per ``min_interval`` seconds, merged into one message per update.
* :class:`HealthPoller` polls on a QTimer with :class:`desktop.api_client.ApiClient` and emits
  ``updated(HealthState)``; :meth:`HealthPoller.inject` feeds a snapshot directly (tests, diagnostics).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PySide6.QtCore import QObject, QTimer, Signal

from desktop.api_client import ApiClient
from desktop.i18n import tr

#: check -> key of its value in /api/metrics "current", and its unit
METRIC_VALUES = {
    "cpu": ("cpu_percent", "%"),
    "memory": ("memory_percent", "%"),
    "disk": ("disk_percent", "%"),
    "latency": ("latency_p95_ms", " ms"),
    "error_rate": ("error_rate", "%"),
}
CHECK_ORDER = ("server", "database", "ollama", "cpu", "memory", "disk", "latency", "error_rate")
RANK = {"normal": 0, "warning": 1, "alert": 2}


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # normal | warning | alert | unknown
    text: str = ""
    #: Shown instead of the translated ``check_<name>`` (a GPU: "GPU 0 (NVIDIA H200)").
    label: str = ""


def check_label(check: Check, lang: str | None = None) -> str:
    return check.label or tr("check_" + check.name, lang)


def _ordered(checks: dict[str, Check]) -> list[str]:
    """The fixed checks in their order, then the GPUs in the server's order."""
    return [*CHECK_ORDER, *(name for name in checks if name.startswith("gpu:"))]


@dataclass(frozen=True)
class HealthState:
    level: str
    checks: dict[str, Check] = field(default_factory=dict)

    def tooltip(self, lang: str | None = None) -> str:
        lines = [f"ModelTrain — {tr('level_' + self.level, lang)}"]
        for name in _ordered(self.checks):
            check = self.checks.get(name)
            if check is None or check.level == "unknown":
                continue
            value = f" {check.text}" if check.text else ""
            lines.append(f"{check_label(check, lang)}:{value} ({tr('level_' + check.level, lang)})")
        return "\n".join(lines)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _gpu_check(gpu: dict[str, Any]) -> Check:
    """``37% · 14.2/141.0 GiB · 41 °C`` (what is known), at the server's level."""
    parts = []
    utilization, used, total = (
        _number(gpu.get("utilization")),
        gpu.get("memory_used"),
        gpu.get("memory_total"),
    )
    temperature = _number(gpu.get("temperature"))
    if utilization is not None:
        parts.append(f"{utilization:.0f}%")
    if isinstance(used, int) and isinstance(total, int) and total > 0:
        parts.append(f"{used / 2**30:.1f}/{total / 2**30:.1f} GiB")
    if temperature is not None:
        parts.append(f"{temperature:.0f} °C")
    level = gpu.get("level")
    name = gpu.get("name")
    label = f"GPU {gpu['index']}" + (f" ({name})" if isinstance(name, str) and name else "")
    return Check(f"gpu:{gpu['index']}", level if level in RANK else "unknown", " · ".join(parts), label)


def evaluate(snapshot: dict[str, Any]) -> HealthState:
    """``snapshot`` keys (each may be missing/None when unknown): ``live`` (bool: /api/health answered),
    ``ready`` (/api/health/ready body), ``metrics`` (/api/metrics body), ``ollama`` (/api/ollama/status
    body), ``alerts`` (/api/alerts body)."""
    checks: dict[str, Check] = {}
    live = snapshot.get("live")
    checks["server"] = Check("server", "unknown" if live is None else "normal" if live else "alert")

    ready = snapshot.get("ready")
    if live is False:
        checks["database"] = Check("database", "unknown")
    elif isinstance(ready, dict) and isinstance(ready.get("checks"), dict):
        db = ready["checks"].get("database") or {}
        migrations = ready["checks"].get("migrations") or {}
        if not db.get("ok", False):
            checks["database"] = Check("database", "alert", str(db.get("detail", "")))
        elif migrations and not migrations.get("ok", False):
            checks["database"] = Check("database", "warning", str(migrations.get("detail", "")))
        else:
            checks["database"] = Check("database", "normal")
    else:
        checks["database"] = Check("database", "unknown")

    metrics = snapshot.get("metrics") if live is not False else None
    current = metrics.get("current") if isinstance(metrics, dict) else None
    status = metrics.get("status") if isinstance(metrics, dict) else None
    for name, (key, unit) in METRIC_VALUES.items():
        value = _number(current.get(key)) if isinstance(current, dict) else None
        server_level = status.get(name) if isinstance(status, dict) else None
        level = server_level if server_level in RANK else "unknown"
        text = (
            f"{value:.0f}{unit}"
            if value is not None and name != "error_rate"
            else (f"{value:.1f}{unit}" if value is not None else "")
        )
        checks[name] = Check(name, level, text)

    ollama = snapshot.get("ollama") if live is not False else None
    state = None
    if isinstance(ollama, dict) and isinstance(ollama.get("state"), str):
        state = ollama["state"]
    elif isinstance(current, dict) and isinstance(current.get("ollama_state"), str):
        state = current["ollama_state"]
    if state is None:
        checks["ollama"] = Check("ollama", "unknown")
    else:
        server_level = status.get("ollama") if isinstance(status, dict) else None
        checks["ollama"] = Check("ollama", server_level if server_level in RANK else "unknown", state)

    gpus = metrics.get("gpus") if isinstance(metrics, dict) else None
    for gpu in gpus if isinstance(gpus, list) else []:
        if isinstance(gpu, dict) and isinstance(gpu.get("index"), int):
            check = _gpu_check(gpu)
            checks[check.name] = check

    known = [c.level for c in checks.values() if c.level in RANK]
    level = max(known, key=RANK.__getitem__) if known else "unknown"
    if live is None and not known:
        level = "unknown"
    return HealthState(level, checks)


@dataclass(frozen=True)
class Notification:
    title: str
    message: str
    level: str


class Notifier:
    """Rate-limited change notifications (worse, or recovered to normal)."""

    def __init__(
        self,
        min_interval: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        lang: str | None = None,
    ) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._lang = lang
        self._told: dict[str, str] = {}  # what the user was last told per check
        self._last: dict[str, float] = {}

    def update(self, state: HealthState) -> Notification | None:
        now = self._clock()
        lines: list[tuple[int, str]] = []
        worst = "normal"
        for name in _ordered(state.checks):
            check = state.checks.get(name)
            if check is None or check.level not in RANK:
                continue
            told = self._told.get(name, "normal")
            if check.level == told:
                continue
            worse = RANK[check.level] > RANK[told]
            recovered = check.level == "normal"
            if not (worse or recovered):
                # alert -> warning: better but not recovered; remember it quietly
                self._told[name] = check.level
                continue
            last = self._last.get(name)
            if last is not None and now - last < self.min_interval:
                continue  # rate-limited: the next allowed update compares against what was told
            self._told[name] = check.level
            self._last[name] = now
            label = check_label(check, self._lang)
            if recovered:
                lines.append((0, tr("notify_recovered", self._lang, check=label)))
            else:
                level_text = tr("level_" + check.level, self._lang)
                detail = f" ({check.text})" if check.text else ""
                lines.append(
                    (
                        RANK[check.level],
                        tr("notify_worse", self._lang, check=label, level=level_text) + detail,
                    )
                )
                if RANK[check.level] > RANK[worst]:
                    worst = check.level
        if not lines:
            return None
        lines.sort(key=lambda item: -item[0])
        return Notification(
            f"ModelTrain — {tr('level_' + state.level, self._lang)}",
            "\n".join(text for _, text in lines),
            worst,
        )


class HealthPoller(QObject):
    updated = Signal(object)  # HealthState
    notify = Signal(object)  # Notification
    lan_status = Signal(object)  # dict from GET /api/lan, or None when unavailable

    ENDPOINTS: ClassVar[dict[str, str]] = {
        "live": "/api/health",
        "ready": "/api/health/ready",
        "metrics": "/api/metrics",
        "alerts": "/api/alerts",
        "ollama": "/api/ollama/status",
        "lan": "/api/lan",
    }

    def __init__(
        self,
        client: ApiClient,
        interval_ms: int = 5000,
        notifier: Notifier | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.client = client
        self.notifier = notifier or Notifier()
        self.state: HealthState = HealthState("unknown")
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.poll_now)
        self._in_flight = False
        self._stopped = False

    def start(self) -> None:
        self._stopped = False
        self._timer.start()
        self.poll_now()

    def stop(self) -> None:
        self._stopped = True
        self._timer.stop()

    def poll_now(self) -> None:
        if self._in_flight or self._stopped:
            return
        self._in_flight = True
        results: dict[str, Any] = {}
        remaining = set(self.ENDPOINTS)

        def collect(name: str) -> Callable[[int, Any], None]:
            def done(status: int, payload: Any) -> None:
                if name == "live":
                    results["live"] = status == 200
                elif name == "ready":
                    results["ready"] = payload if status in (200, 503) and isinstance(payload, dict) else None
                else:
                    # 404 (not landed yet), 403, 409 lan_unavailable...: this part is simply unknown
                    results[name] = payload if status == 200 else None
                remaining.discard(name)
                if not remaining:
                    self._in_flight = False
                    if not self._stopped:
                        self.lan_status.emit(results.get("lan"))
                        self.inject(results)

            return done

        for name, path in self.ENDPOINTS.items():
            self.client.get(path, collect(name), auth=name not in ("live", "ready"))

    def inject(self, snapshot: dict[str, Any]) -> HealthState:
        state = evaluate(snapshot)
        self.state = state
        self.updated.emit(state)
        note = self.notifier.update(state)
        if note is not None:
            self.notify.emit(note)
        return state
