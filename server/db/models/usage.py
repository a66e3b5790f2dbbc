from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow

#: ``usage_rollups.key_id`` of requests made without an API key (the UI). A primary key column cannot be
#: NULL, and NULLs would never collide in a unique index, so "no key" is this all-zero UUID in rollups;
#: the API shows it as ``null``.
NO_KEY = uuid.UUID(int=0)


class UsageRecord(Base):
    """One chat or embedding request, from the UI or from ``/v1`` (written in batches by
    ``services/usage.py``; kept ``MODELTRAIN_USAGE_RAW_DAYS``).

    ``user_id`` and ``key_id`` carry no foreign key on purpose: the rows are an accounting log written
    about a second after the request, and a user or key deleted meanwhile must not make the whole batch
    fail. They stay as history until pruned.
    """

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_user_created", "user_id", "created_at"),
        Index("ix_usage_records_key_created", "key_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[uuid.UUID]
    key_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    #: The model id as the caller named it (the UI's catalog id, or the ``/v1`` id).
    model: Mapped[str] = mapped_column(String(255))
    provider_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    #: True when the upstream gave no counts and they were estimated (characters / 4).
    estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    ttft_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    #: complete | stopped | error
    outcome: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    client_ip: Mapped[str | None] = mapped_column(String(64), default=None)


class UsageRollup(Base):
    """Daily totals per (day, user, key, model), added to at each flush; kept
    ``MODELTRAIN_USAGE_ROLLUP_DAYS``. ``day`` is the UTC day. ``key_id`` is :data:`NO_KEY` for requests
    without an API key."""

    __tablename__ = "usage_rollups"
    __table_args__ = (Index("ix_usage_rollups_user_day", "user_id", "day"),)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    key_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    model: Mapped[str] = mapped_column(String(255), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    stopped: Mapped[int] = mapped_column(Integer, default=0)
    estimated: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[int] = mapped_column(BigInteger, default=0)
