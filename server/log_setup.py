"""Logging for an entry point: console plus a rotating ``app.log`` in the log directory."""

from __future__ import annotations

import logging
import logging.handlers
import sys

from server.settings import Settings

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "modeltrain-file"


def configure_logging(settings: Settings, *, console: bool = True) -> None:
    """Configure the root logger once per process (idempotent)."""
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    if any(getattr(h, "name", "") == _HANDLER_NAME for h in root.handlers):
        return
    log_dir = settings.resolved_log_dir
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    file_handler = logging.handlers.TimedRotatingFileHandler(
        log_dir / "app.log", when="midnight", backupCount=30, encoding="utf-8"
    )
    file_handler.name = _HANDLER_NAME
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(file_handler)
    (log_dir / "app.log").chmod(0o600)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(stream)
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
