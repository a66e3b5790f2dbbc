from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, IdMixin, TimestampMixin


class Conversation(IdMixin, TimestampMixin, Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_user_id_updated_at", "user_id", "updated_at"),
        # The list order (pinned first, newest first) read straight from the index: no sort of all rows.
        Index("ix_conversations_user_id_pinned_updated_at", "user_id", "pinned", "updated_at"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(300), default="")
    #: True once the user renamed it: automatic titles never overwrite a user's title.
    title_edited: Mapped[bool] = mapped_column(default=False)
    model: Mapped[str] = mapped_column(String(400), default="")
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    pinned: Mapped[bool] = mapped_column(default=False)
    #: The knowledge collections this chat uses (ids as strings); null: none.
    knowledge: Mapped[list[str] | None] = mapped_column(JSON, default=None)
