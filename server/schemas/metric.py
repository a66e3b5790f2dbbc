from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class WindowStats(BaseModel):
    requests: int
    errors: int
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


class _MetricValues(BaseModel):
    """The values of one moment: current figures and each history sample share them."""

    cpu_percent: float
    memory_percent: float
    disk_percent: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    #: Percent of 5xx responses in the last minute.
    error_rate: float
    requests_1m: int
    requests_15m: int
    active_streams: int
    ollama_state: str


class MetricsCurrent(_MetricValues):
    windows: dict[str, WindowStats]


class MetricsSample(_MetricValues):
    ts: datetime


class Threshold(BaseModel):
    warning: float
    alert: float


class MetricsRead(BaseModel):
    current: MetricsCurrent
    #: normal | warning | alert per metric (cpu, memory, disk, latency, error_rate, ollama).
    status: dict[str, str]
    thresholds: dict[str, Threshold]
    history: list[MetricsSample]
