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
    #: ERROR/CRITICAL log records of the answering process in the last 5 minutes.
    log_errors_5m: int = 0


class MetricsCurrent(_MetricValues):
    windows: dict[str, WindowStats]


class GpuRead(BaseModel):
    """One GPU of the answering instance (NVIDIA through NVML, AMD through sysfs); None where unknown."""

    index: int = Field(description="0.. NVIDIA first (NVML order), then AMD")
    vendor: str = Field(description="nvidia | amd")
    name: str
    utilization: float | None = Field(description="GPU busy, percent")
    memory_used: int | None = Field(description="bytes")
    memory_total: int | None = Field(description="bytes")
    memory_percent: float | None = None
    temperature: float | None = Field(description="°C")
    power_watts: float | None = None
    power_limit_watts: float | None = None
    level: str = Field(description="normal | warning | alert: the worse of memory use and temperature")


class GpuSample(BaseModel):
    """One GPU in one history sample (what the System page charts)."""

    index: int
    name: str
    utilization: float | None
    memory_percent: float | None


class MetricsSample(_MetricValues):
    ts: datetime
    gpus: list[GpuSample] = Field(default_factory=list)


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
    gpus: list[GpuRead] = Field(
        default_factory=list, description="the answering instance's GPUs (empty without one)"
    )
