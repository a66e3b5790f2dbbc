"""Reading the application and access logs back for admins (``GET /api/logs``)."""

from __future__ import annotations

from server.log_setup import read_log_lines
from server.settings import Settings


def tail_logs(settings: Settings, *, tail: int, level: str | None, q: str | None, source: str) -> list[dict]:
    return read_log_lines(settings.resolved_log_dir, tail=tail, level=level, q=q, source=source)


def log_origin(settings: Settings) -> dict[str, str]:
    """Whose log files ``tail_logs`` reads: this host's (every instance and gunicorn worker on it writes
    to them) and the instance that answered."""
    from server.services.cluster import host_name, instance_name

    return {"host": host_name(), "instance": instance_name(settings)}
