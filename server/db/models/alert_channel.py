from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow


class AlertChannel(Base):
    """An outbound alert channel (``services/alert_channels.py``): a webhook or SMTP e-mail.

    Secrets are never here: the webhook URL (its token is part of it) and HMAC secret, and the SMTP
    password live in the secret store; ``config`` holds only what may be shown (``url_hint``, SMTP host,
    port, user name, addresses)."""

    __tablename__ = "alert_channels"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    #: webhook | email
    kind: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: warning | alert: the lowest level sent
    min_level: Mapped[str] = mapped_column(String(16), default="warning")
    #: HH:MM local time; nothing is sent from start to end (both or neither set)
    quiet_start: Mapped[str | None] = mapped_column(String(5), default=None)
    quiet_end: Mapped[str | None] = mapped_column(String(5), default=None)
    #: The same alert (key, instance) is sent again at most once in this many minutes.
    repeat_minutes: Mapped[int] = mapped_column(Integer, default=60)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Whether the secret store holds this channel's secrets.
    has_secret: Mapped[bool] = mapped_column(Boolean, default=False)
    #: ok | failing | None (never tried)
    last_status: Mapped[str | None] = mapped_column(String(16), default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_success_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AlertDelivery(Base):
    """One alert event to send through one channel: the delivery queue, in the database so that neither a
    restart nor a long outage of the receiver loses an alert, and any instance can retry it."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        Index("ix_alert_deliveries_due", "status", "next_attempt_at"),
        Index("ix_alert_deliveries_channel_key", "channel_id", "key", "instance", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    channel_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alert_channels.id", ondelete="CASCADE"))
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alert_events.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    instance: Mapped[str] = mapped_column(String(255))
    #: raised | changed | resolved (copied from the event)
    state: Mapped[str] = mapped_column(String(16))
    #: pending | sent | failed | suppressed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
