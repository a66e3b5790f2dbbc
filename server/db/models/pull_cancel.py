from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow


class PullCancel(Base):
    """A cancel requested for a model pull that another server instance runs (services/cluster.py).

    ``DELETE /api/ollama/pull/{name}`` on an instance that does not run the pull adds this row (and, on
    PostgreSQL, a ``NOTIFY``); the owning instance's watcher cancels its pull, mirrors the result to
    ``shared_pulls`` and deletes the row.
    """

    __tablename__ = "pull_cancels"

    #: the ``shared_pulls`` key of the pull: ``<instance>|<ollama url>|<model name>``
    key: Mapped[str] = mapped_column(String(1200), primary_key=True)
    instance: Mapped[str] = mapped_column(String(128), index=True)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
