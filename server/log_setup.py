"""Logging for an entry point: console plus daily-rotated ``app.log`` and ``access.log`` in the log dir.

* ``app.log``: the root logger at ``LOG_LEVEL`` (INFO by default, DEBUG when asked).
* ``access.log``: the ``modeltrain.access`` logger (one line per HTTP request, written by
  :class:`server.api.middleware.AccessLogMiddleware`); it does not propagate into ``app.log``.
* Both rotate at local midnight; rotated files are gzipped (``app.log.2026-11-27.gz``) and
  ``log_keep_days`` of them are kept (30 by default, as the spec asks).
* Every line goes through :class:`RedactingFormatter`: bearer tokens, JWTs, API keys and
  ``password=``/``token=``-style values are masked whatever the level, tracebacks included.
* Files are created 0600 in a 0700 directory (docs/security.md, A6).
* :class:`ErrorCountHandler` counts ERROR/CRITICAL records per minute into the process's
  :func:`error_counter` (the error-log surge alert, services/log_surge.py, and the ``log_errors_5m`` metric).

:func:`read_log_lines` serves ``GET /api/logs``: it reads the current and rotated (``.gz``) files.
"""

from __future__ import annotations

import gzip
import logging
import logging.handlers
import os
import re
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from server.settings import Settings

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_PREFIX = "modeltrain-"
ACCESS_LOGGER = "modeltrain.access"
LOG_FILES = {"app": "app.log", "access": "access.log"}

# --------------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------------

_MASK = "[REDACTED]"
_SECRET_KEYS = (
    r"password|passwd|pwd|new_password|current_password|secret|secret_key|api[_-]?key|apikey|"
    r"access[_-]?token|refresh[_-]?token|id_token|token|authorization|cookie|set-cookie|x-api-key"
)
_REDACTIONS: list[tuple[re.Pattern[str], str]] = [
    # Authorization: Bearer <anything>  /  bearer <token>
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"), r"\1 " + _MASK),
    # JSON-ish  "password": "value"  (quoted key, quoted value)
    (
        re.compile(rf"""(?i)(["']?(?:{_SECRET_KEYS})["']?\s*[:=]\s*)(["'])(?:\\.|(?!\2).)*\2"""),
        r"\1\2" + _MASK + r"\2",
    ),
    # key=value / key: value (unquoted), e.g. query strings, headers, repr() of settings
    (
        re.compile(rf"(?i)\b((?:{_SECRET_KEYS})\s*[:=]\s*)(?![\"'\s]|\[REDACTED\])[^\s&,;\"')\]}}]+"),
        r"\1" + _MASK,
    ),
    # JWTs (three base64url parts, the first one a JSON header)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), _MASK),
    # OpenAI-style and similar API keys
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}"), _MASK),
    (re.compile(r"\b(?:ghp|gho|ghs|glpat|xox[bpas])[-_][A-Za-z0-9_-]{10,}"), _MASK),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), _MASK),
]


def redact(text: str) -> str:
    """Mask secrets in ``text``. Safe to call on any string; returns it unchanged when clean."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class RedactingFormatter(logging.Formatter):
    """ISO-8601 local timestamps with offset; one physical line per message (CR/LF escaped, so a
    user-supplied value cannot forge a log line); secrets masked in the whole output."""

    def __init__(self) -> None:
        super().__init__(_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(
            lambda m: f"\\x{ord(m.group()):02x}", record.message.replace("\n", "\\n")
        )
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


# --------------------------------------------------------------------------------------------------
# Error counting (the error-log surge alert): ERROR/CRITICAL records per minute, from the pipeline itself
# --------------------------------------------------------------------------------------------------

#: Minutes of per-minute counts kept: the last 5 minutes plus the hour before (the baseline), and slack.
ERROR_MINUTES_KEPT = 70


class ErrorCounter:
    """ERROR/CRITICAL log records per minute (epoch minute -> count) over the last ``ERROR_MINUTES_KEPT``
    minutes. Thread-safe; ``clock`` (epoch seconds) is replaceable so tests control time."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._minutes: dict[int, int] = {}

    def add(self, count: int = 1) -> None:
        minute = int(self.clock() // 60)
        with self._lock:
            if minute not in self._minutes:  # a new minute: forget those out of reach
                for old in [m for m in self._minutes if m <= minute - ERROR_MINUTES_KEPT]:
                    del self._minutes[old]
            self._minutes[minute] = self._minutes.get(minute, 0) + count

    def per_minute(self, minutes: int, *, ending: float | None = None) -> list[int]:
        """Counts of the ``minutes`` minutes up to and including the current one (or ``ending``'s), oldest
        first."""
        last = int((self.clock() if ending is None else ending) // 60)
        with self._lock:
            return [self._minutes.get(m, 0) for m in range(last - minutes + 1, last + 1)]

    def recent(self, minutes: int = 5) -> int:
        return sum(self.per_minute(minutes))

    def clear(self) -> None:
        with self._lock:
            self._minutes.clear()


class ErrorCountHandler(logging.Handler):
    """Counts every ERROR/CRITICAL record that reaches the root logger (never formats or writes)."""

    def __init__(self, counter: ErrorCounter) -> None:
        super().__init__(level=logging.ERROR)
        self.counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        self.counter.add()


_error_counter: ErrorCounter | None = None
_error_counter_lock = threading.Lock()


def error_counter() -> ErrorCounter:
    """This process's error counter (logging is per process), created on first use."""
    global _error_counter
    with _error_counter_lock:
        if _error_counter is None:
            _error_counter = ErrorCounter()
        return _error_counter


# --------------------------------------------------------------------------------------------------
# Rotation: daily, gzipped, N days kept
# --------------------------------------------------------------------------------------------------


def _gzip_namer(default_name: str) -> str:
    return default_name + ".gz"


def _gzip_rotator(source: str, dest: str) -> None:
    tmp = dest + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(source, "rb") as src, os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as out:
        shutil.copyfileobj(src, out)
    os.replace(tmp, dest)
    os.remove(source)


class _PrivateTimedHandler(logging.handlers.TimedRotatingFileHandler):
    """A midnight-rotating file created 0600 (also after each rollover)."""

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        return super()._open()


class _PrivateWatchedHandler(logging.handlers.WatchedFileHandler):
    """For MODELTRAIN_LOG_ROTATION=external (logrotate, several processes): never rotates itself and
    reopens the file when logrotate has moved it away (packaging/logrotate/modeltrain)."""

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        return super()._open()


def _file_handler(path: Path, keep_days: int, name: str, external: bool = False) -> logging.Handler:
    if external:
        handler: logging.Handler = _PrivateWatchedHandler(path, encoding="utf-8")
        handler.name = _HANDLER_PREFIX + name
        handler.setFormatter(RedactingFormatter())
        return handler
    handler = _PrivateTimedHandler(
        path, when="midnight", backupCount=keep_days, encoding="utf-8", delay=False
    )
    handler.namer = _gzip_namer
    handler.rotator = _gzip_rotator
    handler.name = _HANDLER_PREFIX + name
    handler.setFormatter(RedactingFormatter())
    return handler


def _remove_our_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if (handler.name or "").startswith(_HANDLER_PREFIX):
            logger.removeHandler(handler)
            handler.close()


def configure_logging(settings: Settings, *, console: bool = True) -> None:
    """Configure the root and access loggers for this process.

    Calling it again (another entry point, or a test with other settings) replaces the handlers this
    function installed earlier; handlers installed by others are left alone.
    """
    root = logging.getLogger()
    access = logging.getLogger(ACCESS_LOGGER)
    _remove_our_handlers(root)
    _remove_our_handlers(access)
    root.setLevel(settings.log_level)
    log_dir = settings.resolved_log_dir
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix":
        log_dir.chmod(0o700)
    external = settings.log_rotation == "external"  # logrotate rotates
    root.addHandler(_file_handler(log_dir / LOG_FILES["app"], settings.log_keep_days, "file", external))
    access.setLevel(logging.INFO)
    access.propagate = False
    access.addHandler(
        _file_handler(log_dir / LOG_FILES["access"], settings.log_keep_days, "access", external)
    )
    counting = ErrorCountHandler(error_counter())
    counting.name = _HANDLER_PREFIX + "error-count"
    root.addHandler(counting)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.name = _HANDLER_PREFIX + "console"
        stream.setFormatter(RedactingFormatter())
        root.addHandler(stream)
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def shutdown_logging() -> None:
    """Close and remove the handlers installed by :func:`configure_logging`."""
    _remove_our_handlers(logging.getLogger())
    _remove_our_handlers(logging.getLogger(ACCESS_LOGGER))


# --------------------------------------------------------------------------------------------------
# Reading logs back (GET /api/logs)
# --------------------------------------------------------------------------------------------------

_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d[.,]\d{3}(?:[+-]\d\d:?\d\d|Z)?) "
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<logger>[^\s:]+): (?P<message>.*)$"
)
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def log_files(log_dir: Path, source: str) -> list[Path]:
    """The current file then the rotated ones, newest first. Names come from us, never the caller."""
    base = LOG_FILES[source]
    if not log_dir.is_dir():
        return []
    rotated = []
    for entry in log_dir.iterdir():
        name = entry.name
        if (
            name.startswith(base + ".")
            and not name.endswith(".tmp")
            and entry.is_file()
            and not entry.is_symlink()
        ):
            rotated.append(entry)
    rotated.sort(key=lambda p: p.name, reverse=True)  # app.log.YYYY-MM-DD[.gz]: the date sorts
    current = log_dir / base
    files = [current] if current.is_file() and not current.is_symlink() else []
    return files + rotated


def _records(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    current: dict | None = None
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            for raw in fh:
                line = raw.rstrip("\n")
                match = _LINE.match(line)
                if match:
                    if current is not None:
                        yield current
                    current = match.groupdict()
                elif current is not None and line:
                    current["message"] += "\n" + line  # a traceback line belongs to the record above
    except (OSError, EOFError, gzip.BadGzipFile):
        pass  # a truncated rotated file: return what was readable
    if current is not None:
        yield current


def read_log_lines(
    log_dir: Path, *, tail: int = 200, level: str | None = None, q: str | None = None, source: str = "app"
) -> list[dict]:
    """The last ``tail`` records (oldest first) at or above ``level`` containing ``q`` (case-insensitive),
    looking through the current file and then the rotated ones until enough are found."""
    minimum = LEVELS.get((level or "DEBUG").upper(), 10)
    needle = q.lower() if q else None
    found: list[dict] = []
    for path in log_files(log_dir, source):
        matches: deque[dict] = deque(maxlen=tail)
        for record in _records(path):
            if LEVELS[record["level"]] < minimum:
                continue
            if needle and needle not in record["message"].lower() and needle not in record["logger"].lower():
                continue
            matches.append(record)
        found = list(matches) + found
        if len(found) >= tail:
            break
    return [{**r, "message": redact(r["message"])} for r in found[-tail:]]
