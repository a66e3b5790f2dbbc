"""Backups and restore (spec part 4, 数据备份; security.md E3, E4, E6, D4).

Format: one ``<id>.tar.gz`` per backup holding ``manifest.json`` (first) and the database —
``modeltrain.sqlite3`` (made with SQLite's online backup API, never a copy of the live file) or
``modeltrain.pgdump`` (``pg_dump -Fc``) — plus a ``<id>.json`` sidecar with what the listing needs
(archive size and sha256, keep flag, verification result). The sidecar is written last: an archive
without one (a backup killed half-way) is never listed and is cleaned up by the next backup.

Ids look like ``20261127T030000Z-1a2b3c4d``; they are matched against that pattern before any file is
touched, so a caller can never name a path (D4). Writers hold ``.lock`` in the backup directory.

Restore validates everything first (format, checksum, integrity, foreign keys, that it is a ModelTrain
database, schema not newer than this app) into a temp file beside the live database, migrates that
copy forward and revokes every session in it, then — with the app's pool drained and new connections
held back — keeps a ``pre-restore`` backup of the current database and swaps the temp file in with
fsync + rename. Anything refused leaves the live database untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, event, inspect, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from server import __version__
from server.db import migrate
from server.db.models import BackupLease, RefreshToken, User
from server.db.session import create_db_engine, session_scope, sqlite_path
from server.errors import Conflict, DomainError, InsufficientStorage, NotFound, Unavailable
from server.services.alerts import AlertCenter, get_alert_center
from server.settings import Settings

log = logging.getLogger(__name__)

FORMAT = "modeltrain-backup"
FORMAT_VERSION = 1
MANIFEST_MEMBER = "manifest.json"
SQLITE_MEMBER = "modeltrain.sqlite3"
PG_MEMBER = "modeltrain.pgdump"
ARCHIVE_SUFFIX = ".tar.gz"
SIDECAR_SUFFIX = ".json"
ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")
EXPECTED_TABLES = frozenset({"alembic_version", "users", "refresh_tokens", "conversations", "messages"})
COUNTED_TABLES = ("users", "conversations", "messages", "providers", "model_configs")
SQLITE_MAGIC = b"SQLite format 3\x00"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
PGDUMP_MAGIC = b"PGDMP"
MAX_MANIFEST_BYTES = 64 * 1024
LOCK_FILE = ".lock"
UPLOAD_PREFIX = ".upload-"
RESTORE_PREFIX = ".restore-"
SCHEDULE_LEASE = "daily-backup"
#: An unfinished scheduled run is retried by any instance after this long.
LEASE_SECONDS = 3600
#: How long a restore waits for in-flight requests to give back their database connections.
QUIESCE_TIMEOUT = 15.0
_CHUNK = 1024 * 1024
#: gzip level 1: about twice as fast as the default 6 for a few percent more bytes (bench/backup_restore.py).
COMPRESS_LEVEL = 1


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class InvalidBackup(DomainError):
    """The file is not a usable ModelTrain backup; ``message`` says why."""

    status = 422
    code = "invalid_backup"


class SchemaTooNew(Conflict):
    code = "schema_too_new"


class BackupBusy(Conflict):
    code = "backup_in_progress"


class DatabaseInUse(Conflict):
    code = "database_in_use"


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (28, 122):  # ENOSPC, EDQUOT
        return True
    return isinstance(exc, sqlite3.Error) and "full" in str(exc).lower()


def _disk_full(where: Path) -> InsufficientStorage:
    return InsufficientStorage(
        f"the disk holding {where} is full; free some space (or point MODELTRAIN_BACKUP_DIR at another "
        "disk) and retry — nothing was changed",
        code="disk_full",
    )


# --------------------------------------------------------------------------------------------------
# Small file helpers
# --------------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix":
        with contextlib.suppress(OSError):
            path.chmod(0o700)


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data)
        self.raw.write(view)
        self.digest.update(view)
        self.size += len(view)
        return len(view)

    def flush(self) -> None:
        self.raw.flush()


@contextlib.contextmanager
def _file_lock(path: Path, *, wait: float = 0.0) -> Iterator[None]:
    """An exclusive lock on ``path`` (released by the OS if the process dies). Raises BackupBusy."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                if os.name == "posix":
                    import fcntl

                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:  # pragma: no cover - Windows
                    import msvcrt

                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise BackupBusy("another backup or restore is running; retry when it has finished") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# --------------------------------------------------------------------------------------------------
# The backup directory
# --------------------------------------------------------------------------------------------------


@dataclass
class BackupInfo:
    id: str
    created_at: datetime
    size: int
    sha256: str
    schema_revision: str
    app_version: str
    keep: bool
    verified: bool
    kind: str = "manual"
    database: str = "sqlite"
    verify_error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    path: Path | None = None

    def sidecar(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        data["created_at"] = self.created_at.isoformat()
        return data

    @classmethod
    def from_sidecar(cls, data: dict[str, Any], path: Path) -> BackupInfo:
        created = datetime.fromisoformat(str(data["created_at"]))
        return cls(
            id=str(data["id"]),
            created_at=created if created.tzinfo else created.replace(tzinfo=timezone.utc),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
            schema_revision=str(data.get("schema_revision") or ""),
            app_version=str(data.get("app_version") or ""),
            keep=bool(data.get("keep", False)),
            verified=bool(data.get("verified", False)),
            kind=str(data.get("kind") or "manual"),
            database=str(data.get("database") or "sqlite"),
            verify_error=data.get("verify_error"),
            counts={str(k): int(v) for k, v in (data.get("counts") or {}).items()},
            path=path,
        )


def new_backup_id(now: datetime | None = None) -> str:
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


class BackupStore:
    """The files of one backup directory. Never takes a path from a caller: only validated ids."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def ensure(self) -> None:
        _ensure_private_dir(self.directory)

    @contextlib.contextmanager
    def lock(self, wait: float = 0.0) -> Iterator[None]:
        self.ensure()
        with _file_lock(self.directory / LOCK_FILE, wait=wait):
            yield

    def archive_path(self, backup_id: str) -> Path:
        if not isinstance(backup_id, str) or not ID_PATTERN.match(backup_id):
            raise NotFound("backup not found", code="backup_not_found")
        path = self.directory / f"{backup_id}{ARCHIVE_SUFFIX}"
        if not path.resolve().is_relative_to(self.directory.resolve()):
            raise NotFound("backup not found", code="backup_not_found")
        return path

    def sidecar_path(self, backup_id: str) -> Path:
        return self.archive_path(backup_id).with_name(f"{backup_id}{SIDECAR_SUFFIX}")

    def list(self) -> list[BackupInfo]:
        if not self.directory.is_dir():
            return []
        items = []
        for entry in self.directory.iterdir():
            name = entry.name
            if not name.endswith(SIDECAR_SUFFIX) or not ID_PATTERN.match(name[: -len(SIDECAR_SUFFIX)]):
                continue
            backup_id = name[: -len(SIDECAR_SUFFIX)]
            archive = self.directory / f"{backup_id}{ARCHIVE_SUFFIX}"
            if entry.is_symlink() or archive.is_symlink() or not archive.is_file():
                continue
            try:
                info = BackupInfo.from_sidecar(json.loads(entry.read_text(encoding="utf-8")), archive)
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("ignoring an unreadable backup description %s", name)
                continue
            if info.id == backup_id:
                items.append(info)
        items.sort(key=lambda b: (b.created_at, b.id), reverse=True)
        return items

    def get(self, backup_id: str) -> BackupInfo:
        sidecar = self.sidecar_path(backup_id)
        archive = self.archive_path(backup_id)
        if not sidecar.is_file() or not archive.is_file() or archive.is_symlink():
            raise NotFound("backup not found", code="backup_not_found")
        try:
            return BackupInfo.from_sidecar(json.loads(sidecar.read_text(encoding="utf-8")), archive)
        except (OSError, ValueError, KeyError, TypeError):
            raise NotFound("backup not found", code="backup_not_found") from None

    def save(self, info: BackupInfo) -> None:
        _write_json_atomic(self.sidecar_path(info.id), info.sidecar())

    def set_keep(self, backup_id: str, keep: bool) -> BackupInfo:
        info = self.get(backup_id)
        info.keep = keep
        self.save(info)
        return info

    def delete(self, backup_id: str) -> None:
        info = self.get(backup_id)
        # The sidecar goes first: from then on the backup is no longer listed, even if unlinking the
        # archive fails half-way.
        self.sidecar_path(info.id).unlink(missing_ok=True)
        self.archive_path(info.id).unlink(missing_ok=True)
        log.info("backup %s deleted", info.id)

    def cleanup_partials(self) -> int:
        """Remove leftovers of interrupted runs (call with the lock held). Returns how many."""
        if not self.directory.is_dir():
            return 0
        removed = 0
        for entry in self.directory.iterdir():
            name = entry.name
            if name == LOCK_FILE:
                continue
            orphan_archive = (
                name.endswith(ARCHIVE_SUFFIX)
                and ID_PATTERN.match(name[: -len(ARCHIVE_SUFFIX)])
                and not (self.directory / (name[: -len(ARCHIVE_SUFFIX)] + SIDECAR_SUFFIX)).exists()
            )
            stale_upload = (
                name.startswith((UPLOAD_PREFIX, RESTORE_PREFIX)) and time.time() - entry.stat().st_mtime > 86400
            )
            if name.startswith(".tmp-") or name.endswith((".part", ".tmp")) or orphan_archive or stale_upload:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d leftover(s) of interrupted backups in %s", removed, self.directory)
        return removed

    def prune(self, keep_days: int, now: datetime | None = None) -> list[str]:
        """Delete backups older than ``keep_days`` unless marked keep; never the newest verified one."""
        now = now or datetime.now(timezone.utc)
        items = self.list()
        newest_verified = next((b.id for b in items if b.verified), None)
        removed = []
        for info in items:
            if info.keep or info.id == newest_verified or now - info.created_at <= timedelta(days=keep_days):
                continue
            with contextlib.suppress(NotFound):
                if not self.get(info.id).keep:  # re-read: it may have been marked keep meanwhile
                    self.delete(info.id)
                    removed.append(info.id)
        return removed


def store_for(settings: Settings) -> BackupStore:
    return BackupStore(settings.resolved_backup_dir)


# --------------------------------------------------------------------------------------------------
# Reading and checking databases
# --------------------------------------------------------------------------------------------------


def _open_sqlite_readonly(path: Path) -> sqlite3.Connection:
    # immutable=1: no locks, no -wal/-shm files next to a file nobody else is using.
    uri = "file:" + _uri_path(path) + "?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True)


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path.resolve()), safe="/:")


def check_sqlite_database(path: Path) -> dict[str, Any]:
    """Integrity, foreign keys, ModelTrain tables and schema revision of a SQLite file at rest.

    Raises :class:`InvalidBackup` or :class:`SchemaTooNew`; returns ``{"schema_revision", "counts"}``.
    """
    try:
        conn = _open_sqlite_readonly(path)
    except sqlite3.Error as exc:
        raise InvalidBackup(f"cannot open the database: {exc}") from None
    try:
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise InvalidBackup(f"not a SQLite database, or a damaged one: {exc}") from None
        problems = [r[0] for r in rows if r[0] != "ok"]
        if problems:
            raise InvalidBackup(
                f"the database fails its integrity check: {problems[0]}",
                detail={"integrity_check": problems[:20]},
            )
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alembic_version" not in tables:
            raise InvalidBackup("not a ModelTrain database (it has no schema version table)")
        missing = sorted(EXPECTED_TABLES - tables)
        if missing:
            raise InvalidBackup(f"not a ModelTrain database (missing tables: {', '.join(missing)})")
        versions = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
        if len(versions) != 1 or not versions[0]:
            raise InvalidBackup("the database's schema revision is unreadable")
        revision = str(versions[0])
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        if fk:
            raise InvalidBackup(
                f"the database fails its foreign key check ({len(fk)} dangling reference(s))",
                detail={"foreign_key_check": [list(r) for r in fk[:20]]},
            )
        counts = {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in COUNTED_TABLES if t in tables}
    except sqlite3.DatabaseError as exc:
        raise InvalidBackup(f"the database is damaged: {exc}") from None
    finally:
        conn.close()
    _check_revision(revision)
    return {"schema_revision": revision, "counts": counts}


def _sqlite_facts(path: Path) -> dict[str, Any]:
    """Schema revision and row counts of a (possibly damaged) SQLite file; blanks when unreadable."""
    revision, counts = "", {}
    try:
        conn = _open_sqlite_readonly(path)
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = str(row[0]) if row else ""
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table in COUNTED_TABLES:
                if table in tables:
                    counts[table] = int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        pass
    return {"schema_revision": revision, "counts": counts}


def _check_revision(revision: str) -> None:
    if revision not in migrate.known_revisions():
        raise SchemaTooNew(
            f"the backup's schema revision {revision!r} is newer than (or unknown to) ModelTrain "
            f"{__version__}; upgrade ModelTrain before restoring it",
            detail={"schema_revision": revision, "app_head": migrate.head_revision()},
        )


def _sqlite_snapshot(db_path: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite database via the online backup API (never a file copy)."""
    if not db_path.is_file():
        raise Unavailable(f"the database file {db_path.name} does not exist yet", code="no_database")
    src = sqlite3.connect(str(db_path), timeout=30)
    try:
        src.execute("PRAGMA busy_timeout = 30000")
        out = sqlite3.connect(str(dest))
        try:
            src.backup(out)  # one step: one read transaction, one consistent snapshot
            out.execute("PRAGMA journal_mode = DELETE")  # a self-contained file, no -wal
        finally:
            out.close()
    finally:
        src.close()
    os.chmod(dest, 0o600)


# --- PostgreSQL ------------------------------------------------------------------------------------


def _pg_env(url: str) -> dict[str, str]:
    """libpq connection settings as environment variables: the password never appears in argv (A6)."""
    parsed = make_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    values = {
        "PGHOST": parsed.host,
        "PGPORT": str(parsed.port) if parsed.port else None,
        "PGUSER": parsed.username,
        "PGPASSWORD": parsed.password,
        "PGDATABASE": parsed.database,
    }
    env.update({k: v for k, v in values.items() if v})
    query = dict(parsed.query)
    if "sslmode" in query:
        env["PGSSLMODE"] = str(query["sslmode"])
    return env


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise Unavailable(f"{name} is not installed; install the PostgreSQL client tools", code="pg_tools_missing")
    return found


def _run_pg(args: list[str], url: str, *, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=_pg_env(url), stdout=stdout, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = message[-1] if message else f"exit code {proc.returncode}"
        if "No space left" in reason:
            raise _disk_full(Path(args[-1]).parent)
        raise Unavailable(f"{Path(args[0]).name} failed: {reason}", code="pg_tool_failed")
    return proc


def _pg_dump(url: str, dest: Path) -> None:
    _run_pg([_pg_tool("pg_dump"), "-Fc", "--no-owner", "--no-privileges", "-f", str(dest)], url, stdout=subprocess.DEVNULL)
    os.chmod(dest, 0o600)


def check_pg_dump(path: Path) -> dict[str, Any]:
    """A custom-format dump whose table of contents has ModelTrain's tables and a readable revision."""
    with open(path, "rb") as fh:
        if fh.read(5) != PGDUMP_MAGIC:
            raise InvalidBackup("not a PostgreSQL custom-format dump")
    toc = subprocess.run([_pg_tool("pg_restore"), "-l", str(path)], capture_output=True, check=False)
    if toc.returncode != 0:
        raise InvalidBackup("the PostgreSQL dump is damaged (pg_restore cannot read its table of contents)")
    listing = toc.stdout.decode("utf-8", "replace")
    tables = set(re.findall(r"TABLE (?:DATA )?\S+ (\w+) ", listing))
    missing = sorted(EXPECTED_TABLES - tables)
    if missing:
        raise InvalidBackup(f"not a ModelTrain database (missing tables: {', '.join(missing)})")
    data = subprocess.run(
        [_pg_tool("pg_restore"), "-a", "-t", "alembic_version", "-f", "-", str(path)], capture_output=True, check=False
    )
    match = re.search(r"COPY \S*alembic_version \(version_num\) FROM stdin;\n([^\n\\]+)\n", data.stdout.decode("utf-8", "replace"))
    if data.returncode != 0 or not match:
        raise InvalidBackup("the dump's schema revision is unreadable")
    revision = match.group(1).strip()
    _check_revision(revision)
    return {"schema_revision": revision, "counts": {}}


# --------------------------------------------------------------------------------------------------
# Making backups
# --------------------------------------------------------------------------------------------------


def _live_counts(engine: Engine) -> dict[str, int]:
    names = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return {t: int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar() or 0) for t in COUNTED_TABLES if t in names}


def create_backup(
    settings: Settings,
    *,
    dest: Path | None = None,
    kind: str = "manual",
    keep: bool = False,
    alerts: AlertCenter | None = None,
    now: datetime | None = None,
    lock_wait: float = 0.0,
) -> BackupInfo:
    """Write, verify and register one backup. ``dest`` overrides the backup directory (CLI ``--dest``).

    A failed verification is recorded in the backup (``verified: false``) and raised as an alert; it is
    returned, not hidden. Disk full gives :class:`InsufficientStorage` and leaves nothing behind.
    """
    store = BackupStore(dest) if dest is not None else store_for(settings)
    with store.lock(wait=lock_wait):
        return _create_backup_locked(settings, store, kind=kind, keep=keep, alerts=alerts, now=now)


def _create_backup_locked(
    settings: Settings,
    store: BackupStore,
    *,
    kind: str,
    keep: bool,
    alerts: AlertCenter | None,
    now: datetime | None = None,
) -> BackupInfo:
    store.cleanup_partials()
    now = now or datetime.now(timezone.utc)
    backup_id = new_backup_id(now)
    url = settings.resolved_database_url
    work = store.directory / f".tmp-{backup_id}"
    part = store.directory / f".{backup_id}{ARCHIVE_SUFFIX}.part"
    final = store.archive_path(backup_id)
    started = time.perf_counter()
    try:
        work.mkdir(mode=0o700)
        if settings.is_sqlite:
            db_path = sqlite_path(url)
            if db_path is None:
                raise Unavailable("an in-memory database cannot be backed up", code="no_database")
            member, payload = SQLITE_MEMBER, work / SQLITE_MEMBER
            _sqlite_snapshot(db_path, payload)
            # Only what the manifest needs here; the full checks run once, on the finished archive.
            # A damaged live database still gets archived (it may be all there is to recover from),
            # but as a failed backup, never a silent success.
            facts = _sqlite_facts(payload)
            database = "sqlite"
        else:
            member, payload = PG_MEMBER, work / PG_MEMBER
            engine = create_db_engine(url)
            try:
                counts = _live_counts(engine)
                _pg_dump(url, payload)
            finally:
                engine.dispose()
            facts = check_pg_dump(payload)
            facts["counts"] = counts
            database = "postgresql"
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "id": backup_id,
            "kind": kind,
            "app_version": __version__,
            "schema_revision": facts["schema_revision"],
            "database": database,
            "created_at": now.isoformat(),
            "file": member,
            "size": payload.stat().st_size,
            "sha256": sha256_file(payload),
            "counts": facts["counts"],
        }
        archive_sha, archive_size = _write_archive(part, manifest, payload)
        shutil.rmtree(work, ignore_errors=True)
        # Verify what is on disk, exactly as a restore would read it.
        verify_error = None
        try:
            verify_archive(part)
        except DomainError as exc:
            verify_error = exc.message
        os.replace(part, final)
        info = BackupInfo(
            id=backup_id,
            created_at=now,
            size=archive_size,
            sha256=archive_sha,
            schema_revision=manifest["schema_revision"],
            app_version=__version__,
            keep=keep,
            verified=verify_error is None,
            kind=kind,
            database=database,
            verify_error=verify_error,
            counts=manifest["counts"],
            path=final,
        )
        store.save(info)  # the sidecar makes it a listed backup
        _fsync_dir(store.directory)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        part.unlink(missing_ok=True)
        if final.exists() and not store.sidecar_path(backup_id).exists():
            final.unlink(missing_ok=True)
        if _is_disk_full(exc):
            log.error("backup failed: the disk holding %s is full", store.directory)
            raise _disk_full(store.directory) from None
        raise
    elapsed = time.perf_counter() - started
    if info.verified:
        log.info("backup %s written (%d bytes, %.2f s) and verified", backup_id, archive_size, elapsed)
        if alerts is not None:
            alerts.resolve("backup:verification")
    else:
        log.error("backup %s FAILED verification: %s", backup_id, verify_error)
        if alerts is not None:
            alerts.raise_alert(
                "backup:verification",
                level="alert",
                metric="backup",
                value=backup_id,
                message=f"backup {backup_id} failed verification: {verify_error}",
            )
    return info


def _write_archive(part: Path, manifest: dict[str, Any], payload: Path) -> tuple[str, int]:
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw:
        hashing = _HashingWriter(raw)
        with gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                body = json.dumps(manifest, indent=2, sort_keys=True).encode()
                info = tarfile.TarInfo(MANIFEST_MEMBER)
                info.size, info.mode, info.mtime = len(body), 0o600, int(time.time())
                tar.addfile(info, io.BytesIO(body))
                info = tarfile.TarInfo(manifest["file"])
                info.size, info.mode, info.mtime = payload.stat().st_size, 0o600, int(time.time())
                with open(payload, "rb") as fh:
                    tar.addfile(info, fh)
        raw.flush()
        os.fsync(raw.fileno())
    return hashing.digest.hexdigest(), hashing.size


# --------------------------------------------------------------------------------------------------
# Reading backups (verify and restore)
# --------------------------------------------------------------------------------------------------


@dataclass
class Extracted:
    database: str  # sqlite | postgresql
    path: Path
    manifest: dict[str, Any] | None
    schema_revision: str
    counts: dict[str, int]


def _sniff(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(16)
    except OSError as exc:
        raise InvalidBackup(f"cannot read the file: {exc.strerror}") from None


def extract_backup(source: Path, dest_dir: Path) -> Extracted:
    """Validate ``source`` (a backup archive, or a bare ModelTrain SQLite file) and write its database
    into ``dest_dir``. Nothing outside ``dest_dir`` is written; names inside archives are never used
    as paths (zip-slip, D4). Raises InvalidBackup / SchemaTooNew / InsufficientStorage."""
    head = _sniff(source)
    if head.startswith(SQLITE_MAGIC):
        dest = dest_dir / SQLITE_MEMBER
        try:
            shutil.copyfile(source, dest)  # an uploaded or operator-given file, not the live database
        except OSError as exc:
            if _is_disk_full(exc):
                raise _disk_full(dest_dir) from None
            raise
        facts = check_sqlite_database(dest)
        return Extracted("sqlite", dest, None, facts["schema_revision"], facts["counts"])
    if head.startswith(ZIP_MAGIC):
        raise InvalidBackup("this is a zip archive, not a ModelTrain backup (.tar.gz) or database file")
    if head.startswith(PGDUMP_MAGIC):
        dest = dest_dir / PG_MEMBER
        shutil.copyfile(source, dest)
        facts = check_pg_dump(dest)
        return Extracted("postgresql", dest, None, facts["schema_revision"], facts["counts"])
    if not head.startswith(GZIP_MAGIC):
        raise InvalidBackup("unrecognised file: not a ModelTrain backup or database")
    return _extract_archive(source, dest_dir)


def _extract_archive(source: Path, dest_dir: Path) -> Extracted:
    try:
        tar = tarfile.open(source, mode="r:gz")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InvalidBackup(f"the archive is damaged or truncated ({type(exc).__name__})") from None
    try:
        members = iter(tar)
        first = next(members, None)
        if first is None or first.name != MANIFEST_MEMBER or not first.isreg() or first.size > MAX_MANIFEST_BYTES:
            raise InvalidBackup("not a ModelTrain backup (no manifest)")
        manifest = _read_manifest(tar, first)
        second = next(members, None)
        if second is None:
            raise InvalidBackup("the archive is truncated (no database in it)")
        if second.name != manifest["file"] or not second.isreg():
            raise InvalidBackup("not a ModelTrain backup (unexpected archive contents)")
        if second.size != manifest["size"]:
            raise InvalidBackup("the archive does not match its manifest (size differs)")
        dest = dest_dir / manifest["file"]  # one of two fixed names, checked in _read_manifest
        digest = hashlib.sha256()
        written = 0
        handle = tar.extractfile(second)
        assert handle is not None
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                written += len(chunk)
                if written > manifest["size"]:
                    raise InvalidBackup("the archive does not match its manifest (too long)")
                digest.update(chunk)
                out.write(chunk)
        if written != manifest["size"]:
            raise InvalidBackup("the archive is truncated")
        if digest.hexdigest() != manifest["sha256"]:
            raise InvalidBackup("checksum mismatch: the backup is damaged")
        if next(members, None) is not None:
            raise InvalidBackup("not a ModelTrain backup (unexpected extra files in the archive)")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidBackup(f"the archive is damaged or truncated ({type(exc).__name__})") from None
    except OSError as exc:
        if _is_disk_full(exc):
            raise _disk_full(dest_dir) from None
        raise InvalidBackup(f"the archive is damaged or truncated ({exc.strerror or type(exc).__name__})") from None
    finally:
        tar.close()
    if manifest["database"] == "sqlite":
        facts = check_sqlite_database(dest)
    else:
        facts = check_pg_dump(dest)
        facts["counts"] = dict(manifest.get("counts") or {})
    if facts["schema_revision"] != manifest["schema_revision"]:
        raise InvalidBackup("the archive does not match its manifest (schema revision differs)")
    return Extracted(manifest["database"], dest, manifest, facts["schema_revision"], facts["counts"])


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo) -> dict[str, Any]:
    handle = tar.extractfile(member)
    try:
        manifest = json.loads(handle.read(MAX_MANIFEST_BYTES + 1)) if handle else None
    except (ValueError, UnicodeDecodeError):
        raise InvalidBackup("not a ModelTrain backup (unreadable manifest)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidBackup("not a ModelTrain backup (unknown manifest format)")
    if int(manifest.get("format_version") or 0) > FORMAT_VERSION:
        raise SchemaTooNew("the backup was written by a newer ModelTrain; upgrade ModelTrain to restore it")
    expected = {"sqlite": SQLITE_MEMBER, "postgresql": PG_MEMBER}.get(manifest.get("database"))
    if expected is None or manifest.get("file") != expected:
        raise InvalidBackup("not a ModelTrain backup (manifest names an unexpected database)")
    if not isinstance(manifest.get("size"), int) or not re.fullmatch(r"[0-9a-f]{64}", str(manifest.get("sha256"))):
        raise InvalidBackup("not a ModelTrain backup (manifest lacks size or checksum)")
    if not isinstance(manifest.get("schema_revision"), str):
        raise InvalidBackup("not a ModelTrain backup (manifest lacks the schema revision)")
    return manifest


def verify_archive(path: Path, scratch_parent: Path | None = None) -> Extracted:
    """Fully verify a backup file in a scratch directory (beside it by default); raises when it is not
    restorable."""
    if scratch_parent is None:
        scratch = path.parent / f".tmp-verify-{secrets.token_hex(4)}"
        scratch.mkdir(mode=0o700)
    else:
        scratch = Path(tempfile.mkdtemp(prefix="modeltrain-verify-", dir=scratch_parent))
    try:
        result = extract_backup(path, scratch)
        return Extracted(result.database, path, result.manifest, result.schema_revision, result.counts)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def verify_backup_file(settings: Settings, path: Path) -> dict[str, Any]:
    """CLI ``verify-backup``: a report of a backup file (raises with the reason when it is unusable)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no such file: {path}", code="file_not_found")
    result = verify_archive(path, Path(tempfile.gettempdir()))
    manifest = result.manifest or {}
    return {
        "file": str(path),
        "database": result.database,
        "schema_revision": result.schema_revision,
        "app_version": manifest.get("app_version"),
        "created_at": manifest.get("created_at"),
        "counts": result.counts,
        "sha256": sha256_file(path),
        "checksum": "ok" if manifest else "n/a (bare database file)",
    }


# --------------------------------------------------------------------------------------------------
# Restore
# --------------------------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    source: str
    database: str
    schema_revision_before: str
    schema_revision: str
    counts: dict[str, int]
    previous_backup_id: str | None
    previous_database_file: str | None
    sessions_revoked: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def release_request_session(session: Session | None) -> None:
    """End the calling request's transaction: with SQLite it holds the write lock (BEGIN IMMEDIATE),
    which a backup or restore must not keep for its whole duration."""
    if session is not None:
        session.commit()


def restore_backup(
    settings: Settings, backup_id: str, *, engine: Engine | None = None, alerts: AlertCenter | None = None
) -> RestoreResult:
    store = store_for(settings)
    info = store.get(backup_id)
    return restore_file(settings, store.archive_path(info.id), engine=engine, alerts=alerts, label=info.id)


def restore_file(
    settings: Settings,
    source: Path,
    *,
    engine: Engine | None = None,
    alerts: AlertCenter | None = None,
    label: str | None = None,
) -> RestoreResult:
    """Validate ``source`` and make it the live database (see the module docstring for the steps).

    ``engine`` is the running app's engine (drained and re-opened around the swap); the CLI passes none.
    """
    source = Path(source)
    if not source.is_file():
        raise NotFound(f"no such file: {source}", code="file_not_found")
    store = store_for(settings)
    url = settings.resolved_database_url
    with store.lock(wait=2.0):
        if settings.is_sqlite:
            return _restore_sqlite(settings, store, source, engine, alerts, label or source.name)
        return _restore_postgres(settings, store, source, engine, alerts, label or source.name, url)


def _restore_sqlite(
    settings: Settings,
    store: BackupStore,
    source: Path,
    engine: Engine | None,
    alerts: AlertCenter | None,
    label: str,
) -> RestoreResult:
    db_path = sqlite_path(settings.resolved_database_url)
    if db_path is None:
        raise Unavailable("an in-memory database cannot be restored into", code="no_database")
    _ensure_private_dir(db_path.parent)
    work = db_path.parent / f".{db_path.name}.restore-{secrets.token_hex(4)}"
    work.mkdir(mode=0o700)
    try:
        extracted = extract_backup(source, work)
        if extracted.database != "sqlite":
            raise InvalidBackup("this is a PostgreSQL backup; the configured database is SQLite")
        candidate = extracted.path
        counts = _prepare_restored_sqlite(candidate, work)
        staged = db_path.with_name(f".{db_path.name}.incoming-{secrets.token_hex(4)}")
        os.replace(candidate, staged)  # same directory as the live file: the final rename is atomic
        try:
            _fsync_file(staged)
            with _quiesced(engine):
                previous_id, previous_file = _set_aside(settings, store, db_path, alerts)
                _ensure_not_in_use(db_path)
                os.replace(staged, db_path)
                for suffix in ("-wal", "-shm", "-journal"):
                    db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
                _fsync_dir(db_path.parent)
        finally:
            staged.unlink(missing_ok=True)
    except OSError as exc:
        if _is_disk_full(exc):
            raise _disk_full(db_path.parent) from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if os.name == "posix":
        db_path.chmod(0o600)
    log.warning(
        "database restored from %s (schema %s -> %s); all sessions were revoked",
        label,
        extracted.schema_revision,
        migrate.head_revision(),
    )
    return RestoreResult(
        source=label,
        database="sqlite",
        schema_revision_before=extracted.schema_revision,
        schema_revision=migrate.head_revision(),
        counts=counts,
        previous_backup_id=previous_id,
        previous_database_file=previous_file,
    )


def _revoke_all_sessions(session: Session) -> None:
    session.execute(update(User).values(token_version=User.token_version + 1))
    session.execute(
        update(RefreshToken).where(RefreshToken.revoked_at.is_(None)).values(revoked_at=datetime.now(timezone.utc))
    )


def _prepare_restored_sqlite(candidate: Path, work: Path) -> dict[str, int]:
    """Migrate the candidate forward, revoke every session in it, count what it holds, and leave it a
    single self-contained file (journal mode DELETE, no -wal)."""
    engine = create_db_engine(f"sqlite:///{candidate}")
    try:
        migrate.upgrade(engine, work / "pre-migration")
        with session_scope(sessionmaker(bind=engine)) as session:
            _revoke_all_sessions(session)
        counts = _live_counts(engine)
    finally:
        engine.dispose()
    conn = sqlite3.connect(str(candidate))
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()
    return counts


@contextlib.contextmanager
def _quiesced(engine: Engine | None, timeout: float = QUIESCE_TIMEOUT) -> Iterator[None]:
    """Hold back new connections of ``engine`` and close all of its existing ones.

    New connection attempts wait (bounded) until the block ends, then open the new file. Requests that
    still hold a connection get ``timeout`` seconds to give it back, else DatabaseInUse (409).
    """
    if engine is None:
        yield
        return
    gate = threading.Event()

    def hold(*_args: Any) -> None:
        if not gate.wait(timeout + 60):
            raise Unavailable("the database is being restored; retry", code="restoring")

    event.listen(engine, "do_connect", hold)
    try:
        old_pool = engine.pool
        engine.dispose()
        checked_out = getattr(old_pool, "checkedout", lambda: 0)
        deadline = time.monotonic() + timeout
        while checked_out() > 0:
            if time.monotonic() >= deadline:
                raise DatabaseInUse("requests are still using the database; retry the restore in a moment")
            time.sleep(0.02)
        old_pool.dispose()
        yield
    finally:
        gate.set()
        event.remove(engine, "do_connect", hold)


def _ensure_not_in_use(db_path: Path) -> None:
    """After our own connections are closed, a remaining -wal means another process has it open."""
    if not db_path.exists():
        return
    conn = sqlite3.connect(str(db_path), timeout=5)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error:
        pass  # a damaged live database: it is being replaced anyway
    finally:
        conn.close()
    if db_path.with_name(db_path.name + "-wal").exists():
        raise DatabaseInUse(
            "another process has the database open (a running ModelTrain server?); stop it, or restore "
            "through the running server's API, then retry"
        )


def _set_aside(
    settings: Settings, store: BackupStore, db_path: Path, alerts: AlertCenter | None
) -> tuple[str | None, str | None]:
    """Keep the current database: a regular backup marked keep, or — when it cannot even be read — the
    file itself, hard-linked beside the database (not a copy: the very same bytes)."""
    if not db_path.exists():
        return None, None
    try:
        info = _create_backup_locked(settings, store, kind="pre-restore", keep=True, alerts=None)
        return info.id, None
    except InsufficientStorage:
        raise
    except DomainError as exc:
        aside = db_path.with_name(f"{db_path.name}.pre-restore-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
        os.link(db_path, aside)
        log.warning("the current database could not be backed up (%s); kept it as %s", exc.message, aside.name)
        return None, aside.name


def _restore_postgres(
    settings: Settings,
    store: BackupStore,
    source: Path,
    engine: Engine | None,
    alerts: AlertCenter | None,
    label: str,
    url: str,
) -> RestoreResult:
    # Not ".tmp-": the pre-restore backup below cleans those up.
    work = store.directory / f"{RESTORE_PREFIX}{secrets.token_hex(4)}"
    work.mkdir(mode=0o700)
    try:
        extracted = extract_backup(source, work)
        if extracted.database != "postgresql":
            raise InvalidBackup("this is a SQLite backup; the configured database is PostgreSQL")
        with _quiesced(engine):
            previous = _create_backup_locked(settings, store, kind="pre-restore", keep=True, alerts=None)
            # One transaction: a failure leaves the database as it was.
            _run_pg(
                [
                    _pg_tool("pg_restore"),
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--no-privileges",
                    "--single-transaction",
                    "-d",
                    _pg_env(url).get("PGDATABASE", ""),
                    str(extracted.path),
                ],
                url,
            )
            own = create_db_engine(url)
            try:
                migrate.upgrade(own)
                with session_scope(sessionmaker(bind=own)) as session:
                    _revoke_all_sessions(session)
                counts = _live_counts(own)
            finally:
                own.dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.warning("database restored from %s; all sessions were revoked", label)
    return RestoreResult(
        source=label,
        database="postgresql",
        schema_revision_before=extracted.schema_revision,
        schema_revision=migrate.head_revision(),
        counts=counts,
        previous_backup_id=previous.id,
        previous_database_file=None,
    )


# --------------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------------


def _local_now() -> datetime:
    return datetime.now().astimezone()


class BackupScheduler:
    """Daily backups at ``backup_schedule`` local time, once per slot across every instance that shares
    the database (a lease row claimed with a conditional UPDATE), with retention after each run.

    A missed slot (the computer was off at 03:00) runs at the next check after start. ``clock`` returns
    an aware local datetime; tests inject one.
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        *,
        alerts: AlertCenter | None = None,
        clock: Callable[[], datetime] = _local_now,
        holder: str | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.alerts = alerts
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._done_slot: str | None = None
        self._task: asyncio.Task | None = None

    def due_slot(self, now: datetime) -> datetime | None:
        """The latest scheduled time at or before ``now`` (None when the schedule is off)."""
        if self.settings.backup_schedule == "off":
            return None
        hour, minute = (int(x) for x in self.settings.backup_schedule.split(":"))
        slot = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if slot > now:
            slot = (slot - timedelta(days=1)).replace(hour=hour, minute=minute)
        return slot

    @staticmethod
    def slot_key(slot: datetime) -> str:
        return slot.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")

    def _claim(self, key: str, now_utc: datetime) -> bool:
        try:
            with session_scope(self.session_factory) as session:
                if session.get(BackupLease, SCHEDULE_LEASE) is None:
                    session.add(BackupLease(name=SCHEDULE_LEASE, slot="", state="idle", holder=""))
        except IntegrityError:
            pass  # another instance created it at the same moment
        with session_scope(self.session_factory) as session:
            result = session.execute(
                update(BackupLease)
                .where(
                    BackupLease.name == SCHEDULE_LEASE,
                    (BackupLease.slot < key)
                    | (
                        (BackupLease.slot == key)
                        & (BackupLease.state != "done")
                        & ((BackupLease.lease_until.is_(None)) | (BackupLease.lease_until < now_utc))
                    ),
                )
                .values(
                    slot=key,
                    state="running",
                    holder=self.holder,
                    lease_until=now_utc + timedelta(seconds=LEASE_SECONDS),
                )
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    def _finish(self, key: str, state: str) -> None:
        with session_scope(self.session_factory) as session:
            session.execute(
                update(BackupLease)
                .where(BackupLease.name == SCHEDULE_LEASE, BackupLease.slot == key, BackupLease.holder == self.holder)
                .values(state=state, lease_until=datetime.now(timezone.utc) + timedelta(seconds=LEASE_SECONDS))
                .execution_options(synchronize_session=False)
            )

    def tick(self) -> BackupInfo | None:
        """Run the due backup if no instance has run it yet. Returns the backup this call made."""
        now = self.clock()
        slot = self.due_slot(now)
        if slot is None:
            return None
        key = self.slot_key(slot)
        if key == self._done_slot:
            return None
        now_utc = now.astimezone(timezone.utc)
        if not self._claim(key, now_utc):
            return None
        try:
            info = create_backup(self.settings, kind="scheduled", alerts=self.alerts, now=now_utc, lock_wait=30.0)
        except Exception as exc:
            reason = exc.message if isinstance(exc, DomainError) else type(exc).__name__
            log.error("scheduled backup failed: %s", reason)
            with contextlib.suppress(Exception):
                self._finish(key, "failed")
            if self.alerts is not None:
                self.alerts.raise_alert(
                    "backup:failed", level="alert", metric="backup", value=None, message=f"scheduled backup failed: {reason}"
                )
            return None
        self._finish(key, "done")
        self._done_slot = key
        if self.alerts is not None:
            self.alerts.resolve("backup:failed")
        removed = store_for(self.settings).prune(self.settings.backup_keep_days, now_utc)
        if removed:
            log.info("retention removed %d old backup(s)", len(removed))
        return info

    async def _run(self) -> None:
        import anyio.to_thread

        while True:
            await asyncio.sleep(self.settings.backup_check_seconds)
            try:
                await anyio.to_thread.run_sync(self.tick)
            except Exception:
                log.exception("backup scheduler check failed")

    def start(self) -> None:
        if self._task is None and self.settings.backup_schedule != "off":
            self._task = asyncio.get_running_loop().create_task(self._run(), name="modeltrain-backups")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def alert_on_unverified(settings: Settings, alerts: AlertCenter) -> None:
    """At start: an unverified newest backup is an active alert (the state lives in the sidecars)."""
    newest = next(iter(store_for(settings).list()), None)
    if newest is not None and not newest.verified:
        alerts.raise_alert(
            "backup:verification",
            level="alert",
            metric="backup",
            value=newest.id,
            message=f"backup {newest.id} failed verification: {newest.verify_error or 'unknown reason'}",
        )


async def start(runtime) -> None:
    """Lifespan hook: upload limit for upload-restore, verification alerts, and the scheduler."""
    import anyio.to_thread

    settings = runtime.settings
    runtime.guard.body_limit_overrides["/api/backups/upload-restore"] = settings.max_upload_bytes
    alerts = get_alert_center(runtime.extras)
    with contextlib.suppress(OSError):
        await anyio.to_thread.run_sync(alert_on_unverified, settings, alerts)
    scheduler = BackupScheduler(settings, runtime.session_factory, alerts=alerts)
    runtime.extras["backup_scheduler"] = scheduler
    scheduler.start()


async def stop(runtime) -> None:
    scheduler = runtime.extras.get("backup_scheduler")
    if scheduler is not None:
        await scheduler.stop()


# --------------------------------------------------------------------------------------------------
# API-facing helpers
# --------------------------------------------------------------------------------------------------


def save_upload(settings: Settings, stream: IO[bytes], limit: int) -> Path:
    """Copy an uploaded file into the backup directory under a random name (never the client's)."""
    store = store_for(settings)
    store.ensure()
    dest = store.directory / f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
    written = 0
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                written += len(chunk)
                if written > limit:
                    from server.errors import PayloadTooLarge

                    raise PayloadTooLarge(f"the upload exceeds {limit} bytes")
                out.write(chunk)
    except BaseException as exc:
        dest.unlink(missing_ok=True)
        if _is_disk_full(exc):
            raise _disk_full(store.directory) from None
        raise
    if written == 0:
        dest.unlink(missing_ok=True)
        raise InvalidBackup("the uploaded file is empty")
    return dest


def restore_upload(
    settings: Settings, stream: IO[bytes], *, engine: Engine | None = None, alerts: AlertCenter | None = None
) -> RestoreResult:
    """Save an uploaded file under a random name, restore from it, delete it."""
    path = save_upload(settings, stream, settings.max_upload_bytes)
    try:
        return restore_file(settings, path, engine=engine, alerts=alerts, label="uploaded file")
    finally:
        path.unlink(missing_ok=True)
