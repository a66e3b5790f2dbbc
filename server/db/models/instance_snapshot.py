from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow


class InstanceSnapshot(Base):
    """What one server instance publishes for the others every few seconds (services/cluster.py): its
    metrics summary and active alerts, so ``/api/metrics`` and ``/api/alerts`` answer for the whole
    deployment. Rows not refreshed for a while belong to an instance that stopped: ignored, then deleted.
    """

    __tablename__ = "instance_snapshots"

    instance: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    alerts: Mapped[list[Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)
