from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, IdMixin, utcnow


class ApiKey(IdMixin, Base):
    """A user's key for ``/v1`` (docs/security.md, API keys). Only a keyed HMAC of the key is stored."""

    __tablename__ = "api_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    #: The key's first characters (``mt-`` and a few more), shown so that a user recognises it.
    prefix: Mapped[str] = mapped_column(String(16))
    #: HMAC-SHA256 (hex) of the whole key with a secret derived from SECRET_KEY.
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Allowed model ids or ``*``-globs; None: every model.
    models: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    #: Allowed client IPs or CIDR networks; None: any address.
    ips: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
