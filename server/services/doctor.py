"""``modeltrain doctor``: the spec's troubleshooting table (表6-10) as checks, each with its fix.

| spec symptom                         | check here                                          |
|--------------------------------------|-----------------------------------------------------|
| 后端服务无法启动 (config, port taken)  | ``config``, ``port``                                 |
| 数据库错误 (locked, disk full)         | ``database`` (reachable, BEGIN IMMEDIATE), ``disk``  |
| 内存不足                              | ``memory``                                          |
| data safety (数据备份)                | ``backups`` (recent and verified)                   |
| API timeouts / model errors          | ``ollama`` (found and running)                       |
| 分析日志信息                           | ``logs`` (log directory writable)                   |
| deployed setup (部署)                  | ``deploy`` (bind address, proxies, pg tools, rotation) |

Nginx and TLS-certificate rows belong to the reverse proxy, not to this program.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psutil

from server.settings import Settings, SettingsError, load_settings

#: A daily schedule plus slack: older than this, the newest backup is "not recent".
BACKUP_MAX_AGE = timedelta(hours=26)
DB_LOCK_TIMEOUT = 1.0
MIN_FREE_BYTES = 200 * 1024 * 1024


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False

    def line(self) -> str:
        mark = "SKIP" if self.skipped else ("PASS" if self.ok else "FAIL")
        text = f"[{mark}] {self.name:<9} {self.detail}"
        if not self.ok and self.fix:
            text += f"\n       fix: {self.fix}"
        return text


def check_config(overrides: dict) -> tuple[Check, Settings | None]:
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        return Check("config", False, str(exc).split("; fix:")[0], _fix_of(str(exc))), None
    return Check("config", True, "settings are valid"), settings


def _fix_of(message: str) -> str:
    return message.split("; fix: ", 1)[1] if "; fix: " in message else "correct the setting"


def check_port(settings: Settings) -> Check:
    host, port = settings.host, settings.port
    if port == 0:
        return Check("port", True, "port 0: a free port is chosen at start")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return Check("port", True, f"{host}:{port} is free")
    except OSError:
        pass
    finally:
        sock.close()
    where = f"[{host}]" if ":" in host else host
    try:
        r = httpx.get(f"http://{where}:{port}/api/health", timeout=2.0, trust_env=False)
        if r.status_code == 200 and r.json() == {"status": "ok"}:
            return Check("port", True, f"{host}:{port} is taken by a running ModelTrain server (healthy)")
    except (httpx.HTTPError, ValueError, OSError):
        pass
    return Check(
        "port",
        False,
        f"{host}:{port} is in use by another program",
        "stop that program (see `ss -ltnp`), or choose another port with MODELTRAIN_PORT / --port",
    )


def check_database(settings: Settings) -> Check:
    from sqlalchemy import text

    from server.db import migrate
    from server.db.session import create_db_engine, sqlite_path

    url = settings.resolved_database_url
    if settings.is_sqlite:
        path = sqlite_path(url)
        if path is None or not path.exists():
            return Check("database", True, "no database file yet; it is created at first start")
        conn = None
        try:
            conn = sqlite3.connect(str(path), timeout=DB_LOCK_TIMEOUT, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(DB_LOCK_TIMEOUT * 1000)}")
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                return Check(
                    "database",
                    False,
                    f"{path.name} is damaged ({result})",
                    "restore the latest backup: `modeltrain restore <backup>` "
                    "(see `modeltrain verify-backup`)",
                )
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            text_ = str(exc).lower()
            if "locked" in text_ or "busy" in text_:
                return Check(
                    "database",
                    False,
                    f"{path.name} is locked by another process",
                    "find the process holding it (`fuser` / `lsof` on the file) and stop it; only one "
                    "ModelTrain server per SQLite file",
                )
            if "full" in text_:
                return Check("database", False, f"{path.name}: disk full", "free disk space")
            return Check(
                "database",
                False,
                f"{path.name} cannot be opened: {exc}",
                "check the file and its permissions",
            )
        except sqlite3.DatabaseError as exc:
            return Check(
                "database", False, f"{path.name} is not a usable database: {exc}", "restore the latest backup"
            )
        finally:
            if conn is not None:
                conn.close()
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current, head = migrate.current_revision(engine), migrate.head_revision()
    except Exception as exc:  # any driver error: report it, never crash the doctor
        return Check(
            "database",
            False,
            f"the database is unreachable ({type(exc).__name__})",
            "check DATABASE_URL and that the server runs",
        )
    finally:
        engine.dispose()
    if current is not None and current != head and current not in migrate.known_revisions():
        return Check(
            "database", False, f"schema {current} is newer than this ModelTrain", "upgrade ModelTrain"
        )
    state = "at the latest schema" if current == head else "schema will be upgraded at start"
    return Check("database", True, f"reachable, not locked, {state}")


def _nearest_existing(path: Path) -> Path:
    path = path.expanduser()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_disk(settings: Settings) -> Check:
    from server.services.metrics import resolve_thresholds

    _, alert = resolve_thresholds(settings)["disk"]
    problems, details = [], []
    seen = set()
    for label, path in (("data", settings.data_dir), ("backups", settings.resolved_backup_dir)):
        where = _nearest_existing(path)
        usage = psutil.disk_usage(str(where))
        key = os.stat(where).st_dev
        if key in seen:
            continue
        seen.add(key)
        details.append(f"{label} {usage.percent:.0f}% used, {usage.free // (1024 * 1024)} MiB free")
        if usage.percent > alert or usage.free < MIN_FREE_BYTES:
            problems.append(label)
    if problems:
        return Check(
            "disk",
            False,
            "; ".join(details),
            "free disk space (old logs and backups, model files) "
            "or move MODELTRAIN_BACKUP_DIR to another disk",
        )
    return Check("disk", True, "; ".join(details))


def check_memory(settings: Settings) -> Check:
    from server.services.metrics import resolve_thresholds

    _, alert = resolve_thresholds(settings)["memory"]
    mem = psutil.virtual_memory()
    detail = f"{mem.percent:.0f}% used, {mem.available // (1024 * 1024)} MiB available"
    if mem.percent > alert:
        return Check(
            "memory", False, detail, "close programs or unload models; restart the server if it keeps growing"
        )
    return Check("memory", True, detail)


def check_backups(settings: Settings, now: datetime | None = None) -> Check:
    from server.services.backups import store_for

    now = now or datetime.now(timezone.utc)
    items = store_for(settings).list()
    if not items:
        return Check(
            "backups",
            False,
            f"no backup in {settings.resolved_backup_dir}",
            "run `modeltrain backup` now (automatic backups run daily at "
            f"{settings.backup_schedule} while the server runs)",
        )
    newest = items[0]
    age = now - newest.created_at
    hours = age.total_seconds() / 3600
    if not newest.verified:
        return Check(
            "backups",
            False,
            f"the newest backup {newest.id} failed verification: {newest.verify_error}",
            "check the database (`modeltrain doctor`), then run `modeltrain backup` again",
        )
    if age > BACKUP_MAX_AGE:
        return Check(
            "backups",
            False,
            f"the newest backup is {hours:.0f} h old ({newest.id})",
            "start the server so the schedule runs, or run `modeltrain backup`",
        )
    return Check("backups", True, f"newest {newest.id} ({hours:.1f} h old) verified; {len(items)} kept")


def check_ollama(settings: Settings) -> Check:
    from server.services import ollama_daemon

    url = settings.default_ollama_url
    if ollama_daemon.probe(url, timeout=2.0):
        version = ollama_daemon.fetch_version(url, timeout=2.0)
        return Check("ollama", True, f"running at {url}" + (f" (version {version})" if version else ""))
    binary = ollama_daemon.find_ollama_binary(settings.ollama_bin)
    if binary is None:
        return Check(
            "ollama",
            False,
            f"not running at {url} and not installed",
            "install Ollama (https://ollama.com/download) "
            "or set MODELTRAIN_OLLAMA_BIN / MODELTRAIN_OLLAMA_URL",
        )
    return Check(
        "ollama",
        False,
        f"installed ({binary}) but not running at {url}",
        "start it with `ollama serve`, or set MODELTRAIN_OLLAMA_AUTOSTART=true",
    )


def check_logs(settings: Settings) -> Check:
    log_dir = settings.resolved_log_dir
    try:
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=log_dir, prefix=".doctor-", delete=True) as fh:
            fh.write(b"ok")
            fh.flush()
    except OSError as exc:
        return Check(
            "logs",
            False,
            f"{log_dir} is not writable ({exc.strerror})",
            "fix its owner/permissions (the service user must own it) or set MODELTRAIN_LOG_DIR",
        )
    return Check("logs", True, f"{log_dir} is writable")


LOGROTATE_CONFIG = Path("/etc/logrotate.d/modeltrain")


def check_deployment(
    settings: Settings,
    *,
    which: Callable[[str], str | None] | None = None,
    logrotate_config: Path = LOGROTATE_CONFIG,
) -> Check:
    """The deployed setup: what the bind address exposes, proxies, backup tools and log rotation."""
    import ipaddress
    import shutil

    which = which or shutil.which
    problems: list[tuple[str, str]] = []
    notes: list[str] = []
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if loopback:
        notes.append(f"bound to {settings.host} (a reverse proxy or the desktop app reaches it)")
    elif not settings.allowed_hosts:
        problems.append(
            (
                f"bound to {settings.host}, but no MODELTRAIN_ALLOWED_HOSTS: "
                "browsers on other machines get 403",
                "list the server's names/addresses in MODELTRAIN_ALLOWED_HOSTS, "
                "or bind 127.0.0.1 behind nginx",
            )
        )
    else:
        notes.append(f"bound to {settings.host} for {', '.join(settings.allowed_hosts)}")
    if settings.trusted_proxies:
        notes.append(f"client addresses taken from X-Forwarded-For of {', '.join(settings.trusted_proxies)}")
    if not settings.is_sqlite:
        missing = [tool for tool in ("pg_dump", "pg_restore") if which(tool) is None]
        if missing:
            problems.append(
                (
                    f"{' and '.join(missing)} not found: PostgreSQL backups and restores cannot run",
                    "install the PostgreSQL client tools matching the server version "
                    "(Debian: postgresql-client)",
                )
            )
    if settings.log_rotation == "external":
        if logrotate_config.exists():
            notes.append(f"logs rotated by logrotate ({logrotate_config})")
        else:
            problems.append(
                (
                    f"MODELTRAIN_LOG_ROTATION=external but {logrotate_config} does not exist: "
                    "logs grow forever",
                    "install packaging/logrotate/modeltrain there, or unset MODELTRAIN_LOG_ROTATION",
                )
            )
    if problems:
        return Check("deploy", False, "; ".join(p for p, _ in problems), "; ".join(f for _, f in problems))
    return Check("deploy", True, "; ".join(notes))


def check_certificates(settings: Settings, now: datetime | None = None) -> Check:
    """TLS certificates (services/certificates.py): the nginx ones or MODELTRAIN_TLS_CERT_FILES, and the
    LAN ones; expiring within 14 days fails (3 days: an alert on the System page and the channels)."""
    from server.services import certificates

    statuses = certificates.check_all(settings, now)
    if not statuses:
        return Check("certs", True, "no TLS certificate files configured (plain HTTP or no LAN HTTPS yet)")
    bad = [s for s in statuses if s.level != "normal"]
    if bad:
        return Check(
            "certs",
            False,
            "; ".join(f"{s.level}: {s.detail}" for s in bad),
            "renew the certificate (certbot renew, then reload nginx); the LAN one renews itself at start",
        )
    return Check("certs", True, "; ".join(s.detail for s in statuses))


CHECKS: list[tuple[str, Callable[[Settings], Check]]] = [
    ("port", check_port),
    ("database", check_database),
    ("disk", check_disk),
    ("memory", check_memory),
    ("backups", check_backups),
    ("ollama", check_ollama),
    ("logs", check_logs),
    ("deploy", check_deployment),
    ("certs", check_certificates),
]


def run_checks(overrides: dict | None = None) -> list[Check]:
    """Every check, in table order; with an invalid configuration the others are skipped."""
    config, settings = check_config(overrides or {})
    results = [config]
    for name, fn in CHECKS:
        if settings is None:
            results.append(Check(name, False, "skipped: the configuration is invalid", skipped=True))
            continue
        try:
            results.append(fn(settings))
        except Exception as exc:  # one broken check must not hide the others
            results.append(Check(name, False, f"check failed: {type(exc).__name__}: {exc}", "report this"))
    return results


def all_passed(results: list[Check]) -> bool:
    return all(c.ok for c in results)
