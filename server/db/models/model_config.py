from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, IdMixin, TimestampMixin


class ModelConfig(IdMixin, TimestampMixin, Base):
    """A preset: a named model on a provider with default generation options.

    ``owner_id`` set: a personal preset, seen and used only by that user (gone with the user); ``None``:
    shared with everyone, managed by admins. Names are unique per owner (shared ones among themselves),
    case-insensitive, checked in server/services/model_configs.py.
    """

    __tablename__ = "model_configs"
    __table_args__ = (Index("ix_model_configs_owner_id", "owner_id"),)

    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), default=None
    )
    name: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(300))
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    temperature: Mapped[float | None] = mapped_column(default=None)
    top_p: Mapped[float | None] = mapped_column(default=None)
    context_length: Mapped[int | None] = mapped_column(default=None)
    max_tokens: Mapped[int | None] = mapped_column(default=None)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
