from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, IdMixin, TimestampMixin

ROLES = ("admin", "user")


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin', 'user')", name="role"),)

    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    is_active: Mapped[bool] = mapped_column(default=True)
    must_change_password: Mapped[bool] = mapped_column(default=False)
    #: When a random initial password stops working (None: no expiry).
    password_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Bumped on password change, disable, demotion and logout-everywhere: older access tokens die.
    token_version: Mapped[int] = mapped_column(default=0)
    last_login_at: Mapped[datetime | None] = mapped_column(default=None)
    #: The first-run guide: "pending" (never decided), "open" (reopened), "completed" or "skipped".
    onboarding_state: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
