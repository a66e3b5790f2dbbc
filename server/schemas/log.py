from __future__ import annotations

from pydantic import BaseModel


class LogLine(BaseModel):
    ts: str
    level: str
    logger: str
    message: str


class LogPage(BaseModel):
    lines: list[LogLine]
