from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class AlertRead(BaseModel):
    id: int
    key: str
    level: str
    metric: str
    value: float | str | None
    message: str
    since: datetime
    until: datetime | None = None
    instance: str | None = Field(None, description="the server instance that raised it")


class AlertFeed(BaseModel):
    """``active``: every live instance's active alerts, each labelled with its ``instance``; ``recent``:
    the answering instance's history."""

    active: list[AlertRead]
    recent: list[AlertRead]
    instance: str = Field("", description="the server instance that answered")
    instances: list[str] = Field(default_factory=list, description="every live instance sharing the database")
