from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, IdMixin, TimestampMixin


class ModelConfig(IdMixin, TimestampMixin, Base):
    """A named model on a provider with default generation options."""

    __tablename__ = "model_configs"
    __table_args__ = (UniqueConstraint("provider_id", "name", name="uq_model_configs_provider_id_name"),)

    provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("providers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(300))
    system_prompt: Mapped[str] = mapped_column(Text, default="")
    temperature: Mapped[float | None] = mapped_column(default=None)
    top_p: Mapped[float | None] = mapped_column(default=None)
    context_length: Mapped[int | None] = mapped_column(default=None)
    max_tokens: Mapped[int | None] = mapped_column(default=None)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
