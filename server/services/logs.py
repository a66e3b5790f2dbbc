"""Reading the application and access logs back for admins (``GET /api/logs``)."""

from __future__ import annotations

from server.log_setup import read_log_lines
from server.settings import Settings


def tail_logs(settings: Settings, *, tail: int, level: str | None, q: str | None, source: str) -> list[dict]:
    return read_log_lines(settings.resolved_log_dir, tail=tail, level=level, q=q, source=source)
