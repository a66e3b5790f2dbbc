"""GET /api/usage: raw usage records or daily rollups (services/usage.py)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel


class UsageItem(BaseModel):
    """A raw record (``created_at`` set, ``requests`` 1) or a daily rollup (``day`` set)."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    user_id: uuid.UUID
    key_id: uuid.UUID | None = None
    created_at: datetime | None = None
    day: date | None = None
    requests: int = 1
    errors: int = 0
    stopped: int = 0
    #: Raw: whether the counts were estimated; rollup: how many requests had estimated counts.
    estimated: int | bool = 0
    duration_ms: int = 0
    # raw records only
    id: uuid.UUID | None = None
    provider_id: uuid.UUID | None = None
    ttft_ms: int | None = None
    outcome: Literal["complete", "stopped", "error"] | None = None
    error_code: str | None = None
    client_ip: str | None = None


class UsageUser(BaseModel):
    id: uuid.UUID
    email: str
    display_name: str


class UsageKey(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str


class UsageRead(BaseModel):
    items: list[UsageItem]
    granularity: Literal["raw", "day"]
    #: The day range answered (UTC days, both included).
    day_from: date
    day_to: date
    #: Names for the user and key ids in ``items``.
    users: list[UsageUser]
    keys: list[UsageKey]
