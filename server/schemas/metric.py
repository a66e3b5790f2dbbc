from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


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


class InstanceMetrics(BaseModel):
    """One server instance's latest figures (several instances or gunicorn workers share a database)."""

    instance: str
    host: str
    updated_at: datetime
    current: MetricsCurrent
    status: dict[str, str]


class MetricsRead(BaseModel):
    """``current``, ``status`` and ``history`` are the answering instance's (``instance``); ``instances``
    lists every live instance, this one first."""

    current: MetricsCurrent
    #: normal | warning | alert per metric (cpu, memory, disk, latency, error_rate, ollama).
    status: dict[str, str]
    thresholds: dict[str, Threshold]
    history: list[MetricsSample]
    instance: str = Field(description="the server instance that answered")
    instances: list[InstanceMetrics] = Field(description="every live instance sharing the database")
