from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base


class AlertEvent(Base):
    """One change of an alert (``services/alert_history.py``): raised, changed level, or resolved, by one
    instance. Each instance writes its own events (labelled ``instance``), once each: the unique key makes
    a repeated write a no-op. Kept ``MODELTRAIN_ALERT_DAYS``; no secret is ever stored here."""

    __tablename__ = "alert_events"
    __table_args__ = (
        UniqueConstraint("instance", "key", "state", "at", name="uq_alert_events_once"),
        Index("ix_alert_events_key_at", "key", "at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    #: When this change happened.
    at: Mapped[datetime] = mapped_column(index=True)
    #: When the condition began (the alert's ``since``).
    since: Mapped[datetime] = mapped_column()
    key: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(64))
    #: raised | changed | resolved
    state: Mapped[str] = mapped_column(String(16))
    #: warning | alert (for "resolved": the level it had)
    level: Mapped[str] = mapped_column(String(16), index=True)
    message: Mapped[str] = mapped_column(String(1000))
    value: Mapped[str | None] = mapped_column(String(64), default=None)
    instance: Mapped[str] = mapped_column(String(255), index=True)
