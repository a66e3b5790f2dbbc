from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, utcnow


class LoginThrottle(Base):
    """Failed-login counter for one key (``account:<email>`` or ``ip:<address>``).

    Kept in the database so every server instance sharing it counts the same failures.
    """

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    #: How many lockouts in a row; the lock doubles each time.
    strikes: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
