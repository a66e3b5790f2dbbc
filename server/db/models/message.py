from __future__ import annotations

import enum
import uuid
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, IdMixin, TimestampMixin


class MessageStatus(str, enum.Enum):
    STREAMING = "streaming"
    COMPLETE = "complete"
    STOPPED = "stopped"
    ERROR = "error"


class Message(IdMixin, TimestampMixin, Base):
    """One message. ``parent_id`` links a reply to what it answers, so edits and regenerations branch."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_id_created_at", "conversation_id", "created_at"),
        Index("ix_messages_parent_id", "parent_id"),
        Index("ix_messages_instance_id_status", "instance_id", "status"),
        CheckConstraint("status IN ('streaming', 'complete', 'stopped', 'error')", name="status"),
        CheckConstraint("role IN ('system', 'user', 'assistant')", name="role"),
    )

    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), default=None
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    thinking: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.COMPLETE.value)
    model: Mapped[str] = mapped_column(String(400), default="")
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    #: A reply of a routed model (several hosts): the host that served it, ``{"provider_id", "name"}``.
    served_by: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    #: An assistant reply that used retrieved passages: its numbered sources
    #: (``[{number, file_id, file_name, collection_id, chunk_id, page, text}]``).
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=None)
    #: A reply streamed by this app: the instance streaming it (a stable id of host + data directory,
    #: services/reply_owner.py) and that process's incarnation, so a restarted instance knows at once
    #: which replies left ``streaming`` were its own (docs/security.md, E5).
    instance_id: Mapped[str | None] = mapped_column(String(64), default=None)
    incarnation_id: Mapped[str | None] = mapped_column(String(32), default=None)
