from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class AlertRead(BaseModel):
    id: int
    key: str
    level: str
    metric: str
    value: float | str | None
    message: str
    since: datetime
    until: datetime | None = None


class AlertFeed(BaseModel):
    active: list[AlertRead]
    recent: list[AlertRead]
