from __future__ import annotations

import uuid
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


class AlertEventRead(BaseModel):
    """One stored change of an alert (the shared history, every instance)."""

    id: uuid.UUID
    at: datetime
    since: datetime
    key: str
    metric: str
    state: str = Field(description="raised | changed | resolved")
    level: str = Field(description="warning | alert (for resolved: the level it had)")
    message: str
    value: str | None
    instance: str


class AlertEventPage(BaseModel):
    items: list[AlertEventRead]
    total: int
    page: int
    size: int
    instances: list[str] = Field(default_factory=list, description="every instance found in the history")
