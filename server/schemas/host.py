"""The hosts behind the providers (``GET /api/hosts``): health, load and loaded models."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel

from server.schemas.provider import ProviderKind

HostState = Literal["healthy", "cooling_down", "down", "disabled"]


class HostModelRead(BaseModel):
    """A model the host has loaded (Ollama ``/api/ps``)."""

    name: str
    #: Bytes of the model in GPU memory; null when the host does not say.
    size_vram: int | None = None
    #: Bytes of the model in memory in all.
    size: int | None = None


class HostRead(BaseModel):
    """One provider's host as this server instance sees it."""

    id: uuid.UUID
    name: str
    kind: ProviderKind
    base_url: str
    group: str | None
    priority: int
    weight: float
    is_default: bool
    enabled: bool
    #: healthy; cooling_down (recent failures: skipped until the cool-down ends); down (the last probe
    #: failed); disabled (the provider is switched off).
    state: HostState
    last_error: str | None
    #: The last probe's round trip in milliseconds (null before a probe or when it failed).
    probe_latency_ms: float | None
    #: Replies this server instance is streaming from the host now.
    streams_in_flight: int
    consecutive_failures: int
    #: Seconds left of the cool-down (0 when none).
    cooldown_seconds: float
    #: Models the host answered "not found" for: routed to the other hosts of the group.
    missing_models: list[str]
    #: Whether the host has been probed since this instance started.
    probed: bool
    loaded_models: list[HostModelRead]


class HostList(BaseModel):
    items: list[HostRead]
    #: MODELTRAIN_HOST_PROBE_SECONDS, MODELTRAIN_ROUTE_STRATEGY and MODELTRAIN_ROUTE_RETRIES.
    probe_seconds: float
    strategy: Literal["weighted", "least_busy"]
    retries: int
