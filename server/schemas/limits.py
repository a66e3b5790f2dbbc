"""Limits: ``PUT /api/users/{id}/limits``, ``PUT /api/keys/{id}/limits`` and the reads."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LimitKind = Literal[
    "requests_per_minute", "tokens_per_minute", "tokens_per_day", "tokens_per_month", "concurrent_streams"
]


class LimitsUpdate(BaseModel):
    """Any of the kinds: a positive integer, ``null`` = unlimited, absent = unchanged."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=1, le=2_000_000_000)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=2_000_000_000)
    tokens_per_day: int | None = Field(default=None, ge=1, le=2_000_000_000)
    tokens_per_month: int | None = Field(default=None, ge=1, le=2_000_000_000)
    concurrent_streams: int | None = Field(default=None, ge=1, le=100_000)

    def changes(self) -> dict[str, int | None]:
        """The fields the request named (``null`` included), not those left out."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class LimitRead(BaseModel):
    kind: LimitKind
    #: The effective limit (None: unlimited).
    limit: int | None
    #: Where the effective limit comes from: the role default, the user's override or the key's own.
    source: Literal["role", "user", "key"]
    #: The user's effective limit and, on a key, the key's own (None: unlimited / not set).
    user_limit: int | None
    key_limit: int | None = None
    #: Used in the current window (streams: running now); None while unlimited (not counted).
    used: int | None
    remaining: int | None
    #: When the window renews (None for concurrent_streams).
    resets_at: datetime | None


class LimitsRead(BaseModel):
    user_id: uuid.UUID
    key_id: uuid.UUID | None = None
    limits: list[LimitRead]
