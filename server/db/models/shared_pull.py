from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow


class SharedPull(Base):
    """A model pull running in one server instance, mirrored for the others (services/cluster.py).

    Pulls are tasks of the instance that started them (``PullManager``); each instance copies its own
    pulls' summaries here about once a second, and ``GET /api/ollama/pulls`` on any instance lists its own
    pulls plus the fresh rows of the others. Rows of an instance that stopped updating go stale and are
    ignored, then deleted.
    """

    __tablename__ = "shared_pulls"

    #: ``<instance>|<ollama url>|<model name>``
    key: Mapped[str] = mapped_column(String(1200), primary_key=True)
    instance: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(String(1000))
    name: Mapped[str] = mapped_column(String(400))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_shared_pulls_updated_at", "updated_at"),)
