from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, IdMixin, TimestampMixin


class ModelRoute(IdMixin, TimestampMixin, Base):
    """An explicit route (admin): one model, by its own name, served by several targets, each a provider
    and the model's name there with a priority and a weight (services/model_routes.py)."""

    __tablename__ = "model_routes"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    enabled: Mapped[bool] = mapped_column(default=True)
    #: ``[{"provider_id": "<uuid>", "model": str, "priority": int, "weight": float}, ...]``; a target whose
    #: provider is gone or disabled is skipped.
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
