from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query

from server.deps import AdminUser, SettingsDep
from server.schemas.log import LogLine, LogPage
from server.services import logs as logs_service

router = APIRouter(prefix="/api/logs", tags=["logs"])


@router.get("", response_model=LogPage, summary="Tail the server log with level filter and search (admin)")
def get_logs(
    _: AdminUser,
    settings: SettingsDep,
    tail: int = Query(200, ge=1, le=5000, description="How many records (the newest)."),
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None = Query(
        None, description="Minimum level."
    ),
    q: str | None = Query(None, max_length=200, description="Case-insensitive text to look for."),
    source: Literal["app", "access"] = Query("app", description="app.log or access.log."),
) -> LogPage:
    lines = logs_service.tail_logs(settings, tail=tail, level=level, q=q, source=source)
    return LogPage(lines=[LogLine(**line) for line in lines], **logs_service.log_origin(settings))
