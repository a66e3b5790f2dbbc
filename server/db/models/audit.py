from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow


class AuditEntry(Base):
    """One administrative or security event (``services/audit.py``), append-only: no API edits or
    deletes an entry; only retention (``MODELTRAIN_AUDIT_DAYS``) prunes.

    ``actor_id`` carries no foreign key on purpose: entries outlive the users they name, and
    ``actor_email`` keeps the address as it was when the event happened. ``details`` never holds a secret.
    """

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_actor_created", "actor_id", "created_at"),
        Index("ix_audit_entries_target", "target_kind", "target_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    actor_email: Mapped[str | None] = mapped_column(String(320), default=None)
    client_ip: Mapped[str | None] = mapped_column(String(64), default=None)
    #: One of ``services.audit.AuditAction``.
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_kind: Mapped[str | None] = mapped_column(String(32), default=None)
    target_id: Mapped[str | None] = mapped_column(String(255), default=None)
    target_name: Mapped[str | None] = mapped_column(String(255), default=None)
    #: success | failure | denied
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
