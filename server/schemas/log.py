from __future__ import annotations

from pydantic import BaseModel, Field


class LogLine(BaseModel):
    ts: str
    level: str
    logger: str
    message: str


class LogPage(BaseModel):
    """The log files of one host: every instance (gunicorn worker) on that host writes to them."""

    lines: list[LogLine]
    host: str = Field("", description="the host whose log files these lines come from")
    instance: str = Field("", description="the server instance that answered (one of that host's)")
