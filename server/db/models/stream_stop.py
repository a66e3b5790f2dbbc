from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow


class StreamStop(Base):
    """A stop requested for a streaming reply that another server instance is generating.

    Several instances behind nginx share the database but not their in-process stream registries: the
    instance that receives ``POST /api/chat/{id}/stop`` without owning the stream adds this row, and the
    owning instance's watcher (services/cluster.py) finds it within ``stop_poll_seconds``, stops the
    stream (keeping the partial reply) and deletes the row.
    """

    __tablename__ = "stream_stops"

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
