from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow


class BackupLease(Base):
    """Who runs a scheduled backup slot, so instances sharing one database run it once.

    The backups themselves are files described by their own manifests (a restore must not change the
    list of backups); only this coordination row lives in the database. ``slot`` is the scheduled
    time in UTC (``YYYY-MM-DDTHH:MMZ``, so text order is time order). A holder claims a slot with one
    conditional UPDATE: a later slot, or the same slot whose unfinished lease has expired.
    """

    __tablename__ = "backup_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[str] = mapped_column(String(32), default="")
    #: running | done | failed
    state: Mapped[str] = mapped_column(String(16), default="idle")
    holder: Mapped[str] = mapped_column(String(200), default="")
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
