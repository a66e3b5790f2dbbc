"""Logs: app.log + access.log, daily rotation with gzip and 30 days kept, redaction, GET /api/logs."""

from __future__ import annotations

import gzip
import logging
import logging.handlers
import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from server.log_setup import (
    ACCESS_LOGGER,
    RedactingFormatter,
    configure_logging,
    read_log_lines,
    redact,
    shutdown_logging,
)
from server.settings import Settings
from tests.server.conftest import bearer

SECRETS = [
    "hunter2-Secret-pw",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "sk-proj-AbCdEf0123456789abcdefXYZ",
    "opaque-refresh-TOKEN-value-1234567890",
]


@pytest.fixture
def logging_to(settings: Settings) -> Iterator[Callable[..., Settings]]:
    """Configure logging for this test (the app's log directory) and undo it afterwards."""
    root = logging.getLogger()
    level = root.level

    def configure(**overrides) -> Settings:
        configured = settings.model_copy(update=overrides)
        configure_logging(configured, console=False)
        return configured

    yield configure
    shutdown_logging()
    root.setLevel(level)


def _handler(name: str, logger: str = "") -> logging.handlers.TimedRotatingFileHandler:
    for h in logging.getLogger(logger).handlers:
        if h.name == name:
            return h  # type: ignore[return-value]
    raise AssertionError(f"no handler {name}")


def _flush() -> None:
    for logger in (logging.getLogger(), logging.getLogger(ACCESS_LOGGER)):
        for h in logger.handlers:
            h.flush()


def test_secrets_never_reach_the_log_file_at_any_level(logging_to: Callable[..., Settings]) -> None:
    settings = logging_to(log_level="DEBUG")
    log = logging.getLogger("server.test.redaction")
    pw, jwt, key, refresh = SECRETS
    log.debug('login body {"email": "a@b.c", "password": "%s"}', pw)
    log.info("headers: Authorization: Bearer %s", jwt)
    log.warning("provider configured with api_key=%s", key)
    log.error("refresh_token=%s&next=/", refresh)
    log.info("plain JWT %s and key %s in text", jwt, key)
    log.info("settings repr: secret_key='%s' password: %s", pw, pw)
    try:
        raise ValueError(f"upstream said: invalid key {key} for Bearer {jwt}")
    except ValueError:
        log.exception("call failed")
    log.info("multi\nline\n2026-01-01T00:00:00.000+00:00 CRITICAL forged: entry")
    _flush()
    text = (settings.resolved_log_dir / "app.log").read_text()
    for secret in SECRETS:
        assert secret not in text
    assert text.count("[REDACTED]") >= 8
    assert "call failed" in text and "ValueError" in text
    # a message cannot forge a log line: newlines are escaped
    assert not any(
        line.startswith("2026-01-01T00:00:00.000+00:00 CRITICAL forged") for line in text.splitlines()
    )
    assert ((settings.resolved_log_dir / "app.log").stat().st_mode & 0o777) == 0o600


def test_redact_leaves_ordinary_text_alone() -> None:
    plain = "user 3f2a created with role admin; 12 tokens streamed in 0.4 s; max_tokens=100"
    assert redact(plain) == plain
    assert (
        redact("password of user 7 reset by an administrator")
        == "password of user 7 reset by an administrator"
    )


def test_level_follows_log_level(logging_to: Callable[..., Settings]) -> None:
    settings = logging_to()  # INFO by default
    logging.getLogger("server.test.level").debug("hidden debug line")
    logging.getLogger("server.test.level").info("visible info line")
    _flush()
    text = (settings.resolved_log_dir / "app.log").read_text()
    assert "visible info line" in text and "hidden debug line" not in text
    settings = logging_to(log_level="DEBUG")
    logging.getLogger("server.test.level").debug("now visible debug line")
    _flush()
    assert "now visible debug line" in (settings.resolved_log_dir / "app.log").read_text()


def test_daily_rotation_gzips_and_keeps_thirty_days(logging_to: Callable[..., Settings]) -> None:
    settings = logging_to()
    handler = _handler("modeltrain-file")
    assert handler.when == "MIDNIGHT" and handler.backupCount == 30
    log = logging.getLogger("server.test.rotation")
    day = 86400
    base = handler.rolloverAt
    for i in range(35):
        log.info("entry of day %d", i)
        handler.rolloverAt = base + i * day  # the rotated file is named after the day that ended
        handler.doRollover()
    log.info("entry of today")
    _flush()
    rotated = sorted(p.name for p in settings.resolved_log_dir.iterdir() if p.name.startswith("app.log."))
    assert len(rotated) == 30
    assert all(re.fullmatch(r"app\.log\.\d{4}-\d\d-\d\d\.gz", n) for n in rotated), rotated
    newest = settings.resolved_log_dir / rotated[-1]
    assert "entry of day 34" in gzip.decompress(newest.read_bytes()).decode()
    assert (newest.stat().st_mode & 0o777) == 0o600
    assert "entry of today" in (settings.resolved_log_dir / "app.log").read_text()
    # the oldest five days were deleted
    contents = "".join(
        gzip.decompress((settings.resolved_log_dir / n).read_bytes()).decode() for n in rotated
    )
    assert "entry of day 4\n" not in contents and "entry of day 5\n" in contents


def test_read_log_lines_filters_and_searches_rotated_files(logging_to: Callable[..., Settings]) -> None:
    settings = logging_to()
    log = logging.getLogger("server.test.reader")
    log.warning("old needle warning")
    log.info("old info line")
    handler = _handler("modeltrain-file")
    handler.doRollover()
    log.info("new info line")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("new needle error")
    _flush()
    assert any(p.name.endswith(".gz") for p in settings.resolved_log_dir.iterdir())
    lines = read_log_lines(settings.resolved_log_dir, tail=10, q="NEEDLE")
    assert [r["message"].splitlines()[0] for r in lines] == ["old needle warning", "new needle error"]
    assert "RuntimeError: boom" in lines[1]["message"]  # the traceback belongs to its record
    errors = read_log_lines(settings.resolved_log_dir, tail=10, level="ERROR")
    assert [r["level"] for r in errors] == ["ERROR"]
    assert len(read_log_lines(settings.resolved_log_dir, tail=2)) == 2


def test_access_log_has_request_id_status_and_duration_but_no_query(
    logging_to: Callable[..., Settings], client: TestClient
) -> None:
    settings = logging_to()
    r = client.get("/api/health?token=sneaky-query-secret-value")
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    r2 = client.get("/api/users/me", headers={"X-Request-ID": "client-chosen-id-42"})
    assert r2.headers["x-request-id"] == "client-chosen-id-42"
    r3 = client.get("/api/health", headers={"X-Request-ID": "bad id\nwith newline"})
    assert re.fullmatch(r"[0-9a-f]{32}", r3.headers["x-request-id"])
    _flush()
    text = (settings.resolved_log_dir / "access.log").read_text()
    assert f"rid={rid} method=GET path=/api/health status=200 duration_ms=" in text
    assert "rid=client-chosen-id-42 method=GET path=/api/users/me status=401" in text
    assert "sneaky-query-secret-value" not in text and "token=" not in text
    assert "path=/api/health" not in (settings.resolved_log_dir / "app.log").read_text()


def test_logs_api_is_admin_only_and_returns_records(
    logging_to: Callable[..., Settings], client: TestClient, admin_token: str, user_token: str
) -> None:
    logging_to()
    logging.getLogger("server.test.api").warning("api visible warning with Bearer abcdefghijklmnop")
    _flush()
    assert client.get("/api/logs").status_code == 401
    assert client.get("/api/logs", headers=bearer(user_token)).status_code == 403
    r = client.get(
        "/api/logs", params={"tail": 50, "level": "WARNING", "q": "api visible"}, headers=bearer(admin_token)
    )
    assert r.status_code == 200, r.text
    lines = r.json()["lines"]
    assert len(lines) == 1
    assert set(lines[0]) == {"ts", "level", "logger", "message"}
    assert lines[0]["level"] == "WARNING" and lines[0]["logger"] == "server.test.api"
    assert "abcdefghijklmnop" not in lines[0]["message"]
    r = client.get("/api/logs", params={"source": "access", "tail": 5}, headers=bearer(admin_token))
    assert r.status_code == 200 and all(line["logger"] == ACCESS_LOGGER for line in r.json()["lines"])
    for bad in ({"tail": 0}, {"tail": 100000}, {"level": "LOUD"}, {"source": "../../etc/passwd"}):
        r = client.get("/api/logs", params=bad, headers=bearer(admin_token))
        assert r.status_code == 422 and r.json()["code"] == "invalid_input", bad


def test_formatter_timestamps_are_iso_with_offset() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    line = RedactingFormatter().format(record)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d INFO x: hello$", line)
