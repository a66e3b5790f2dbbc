"""Limits (services/limits.py): overrides per user and per API key, window counters, stream reservations.

Times here are integer epoch seconds (UTC): windows are compared and computed arithmetically, the same on
SQLite and PostgreSQL. ``subject_id`` is a user's or an API key's id (both UUIDs, so they never collide);
no foreign keys: rows of a deleted subject are harmless and pruned with their window.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow


class LimitOverride(Base):
    """One limit set on a user (over the role default) or on an API key. ``value`` NULL = unlimited."""

    __tablename__ = "limit_overrides"

    subject_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: "user" or "key"
    subject_type: Mapped[str] = mapped_column(String(8))
    value: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LimitCounter(Base):
    """What a subject used of one limit kind in one window (``window_start``: epoch seconds of the UTC
    minute, day or month). Changed only by single conditional UPDATEs. The ``concurrent_streams`` row
    (window 0) holds nothing: it is the row a stream admission locks while it counts live reservations."""

    __tablename__ = "limit_counters"

    subject_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    used: Mapped[int] = mapped_column(BigInteger, default=0)


class LimitReservation(Base):
    """A live reply holding a stream slot (and the tokens it reserved, with the counters charged), until
    it is settled. Renewed by its instance's heartbeat; one whose ``expires_at`` passed (its instance
    died) no longer holds a slot and is deleted by the sweep."""

    __tablename__ = "limit_reservations"
    __table_args__ = (
        Index("ix_limit_reservations_user_expires", "user_id", "expires_at"),
        Index("ix_limit_reservations_key_expires", "key_id", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID]
    key_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The token counters charged at admission: ``[[subject_id, kind, window_start], ...]``.
    charges: Mapped[list[Any]] = mapped_column(JSON, default=list)
    expires_at: Mapped[int] = mapped_column(BigInteger)
