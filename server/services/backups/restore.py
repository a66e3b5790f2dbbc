"""Restore: from a backup in the directory, a file the operator names, or an upload.

Everything is validated first (format, checksum, integrity, foreign keys, that it is a ModelTrain
database, schema not newer than this app) into a temp file beside the live database; that copy is
migrated forward and every session in it revoked. Then — with the app's pool drained and new
connections held back — a ``pre-restore`` backup of the current database is kept and the temp file
swapped in with fsync + rename. Anything refused leaves the live database untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, event, update
from sqlalchemy.orm import Session, sessionmaker

from server.db import migrate
from server.db.models import RefreshToken, User
from server.db.session import create_db_engine, session_scope, sqlite_path
from server.errors import DomainError, InsufficientStorage, NotFound, PayloadTooLarge, Unavailable
from server.schemas.backup import RestoreRead
from server.services.alerts import AlertCenter
from server.services.backups.archive import extract_backup
from server.services.backups.checks import live_counts, pg_env, pg_tool, run_pg
from server.services.backups.create import create_backup_locked
from server.services.backups.errors import DatabaseInUse, InvalidBackup, disk_full, is_disk_full
from server.services.backups.files import CHUNK, ensure_private_dir, fsync_dir, fsync_file
from server.services.backups.store import RESTORE_PREFIX, UPLOAD_PREFIX, BackupStore, store_for
from server.settings import Settings

log = logging.getLogger(__name__)

#: How long a restore waits for in-flight requests to give back their database connections.
QUIESCE_TIMEOUT = 15.0


def release_request_session(session: Session | None) -> None:
    """End the calling request's transaction: with SQLite it holds the write lock (BEGIN IMMEDIATE),
    which a backup or restore must not keep for its whole duration."""
    if session is not None:
        session.commit()


def restore_backup(
    settings: Settings, backup_id: str, *, engine: Engine | None = None, alerts: AlertCenter | None = None
) -> RestoreRead:
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
) -> RestoreRead:
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
) -> RestoreRead:
    db_path = sqlite_path(settings.resolved_database_url)
    if db_path is None:
        raise Unavailable("an in-memory database cannot be restored into", code="no_database")
    ensure_private_dir(db_path.parent)
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
            fsync_file(staged)
            with _quiesced(engine):
                previous_id, previous_file = _set_aside(settings, store, db_path, alerts)
                _ensure_not_in_use(db_path)
                os.replace(staged, db_path)
                for suffix in ("-wal", "-shm", "-journal"):
                    db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
                fsync_dir(db_path.parent)
                _swap_files(settings, extracted.files_dir)
        finally:
            staged.unlink(missing_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(db_path.parent) from None
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
    return RestoreRead(
        source=label,
        database="sqlite",
        schema_revision_before=extracted.schema_revision,
        schema_revision=migrate.head_revision(),
        counts=counts,
        previous_backup_id=previous_id,
        previous_database_file=previous_file,
        sessions_revoked=True,
    )


def _swap_files(settings: Settings, incoming: Path | None) -> None:
    """Make the backup's uploaded files the live ones (``<data dir>/files``), as the database now refers
    to them; the previous files are removed (the pre-restore backup holds them). An archive without
    files (made before attachments existed) leaves them as they are."""
    if incoming is None:
        return
    live = settings.data_dir / "files"
    old = settings.data_dir / f".files-old-{secrets.token_hex(4)}"
    if live.exists():
        os.replace(live, old)
    shutil.move(str(incoming), str(live))
    shutil.rmtree(old, ignore_errors=True)


def _revoke_all_sessions(session: Session) -> None:
    session.execute(update(User).values(token_version=User.token_version + 1))
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(timezone.utc))
    )


def _prepare_restored_sqlite(candidate: Path, work: Path) -> dict[str, int]:
    """Migrate the candidate forward, revoke every session in it, count what it holds, and leave it a
    single self-contained file (journal mode DELETE, no -wal)."""
    engine = create_db_engine(f"sqlite:///{candidate}")
    try:
        migrate.upgrade(engine, work / "pre-migration")
        with session_scope(sessionmaker(bind=engine)) as session:
            _revoke_all_sessions(session)
        counts = live_counts(engine)
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
        info = create_backup_locked(settings, store, kind="pre-restore", keep=True, alerts=None)
        return info.id, None
    except InsufficientStorage:
        raise
    except DomainError as exc:
        aside = db_path.with_name(f"{db_path.name}.pre-restore-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
        os.link(db_path, aside)
        log.warning(
            "the current database could not be backed up (%s); kept it as %s", exc.message, aside.name
        )
        return None, aside.name


def _restore_postgres(
    settings: Settings,
    store: BackupStore,
    source: Path,
    engine: Engine | None,
    alerts: AlertCenter | None,
    label: str,
    url: str,
) -> RestoreRead:
    # Not ".tmp-": the pre-restore backup below cleans those up.
    work = store.directory / f"{RESTORE_PREFIX}{secrets.token_hex(4)}"
    work.mkdir(mode=0o700)
    try:
        extracted = extract_backup(source, work)
        if extracted.database != "postgresql":
            raise InvalidBackup("this is a SQLite backup; the configured database is PostgreSQL")
        with _quiesced(engine):
            previous = create_backup_locked(settings, store, kind="pre-restore", keep=True, alerts=None)
            # One transaction: a failure leaves the database as it was.
            run_pg(
                [
                    pg_tool("pg_restore"),
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--no-privileges",
                    "--single-transaction",
                    "-d",
                    pg_env(url).get("PGDATABASE", ""),
                    str(extracted.path),
                ],
                url,
            )
            own = create_db_engine(url)
            try:
                migrate.upgrade(own)
                with session_scope(sessionmaker(bind=own)) as session:
                    _revoke_all_sessions(session)
                counts = live_counts(own)
            finally:
                own.dispose()
            _swap_files(settings, extracted.files_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.warning("database restored from %s; all sessions were revoked", label)
    return RestoreRead(
        source=label,
        database="postgresql",
        schema_revision_before=extracted.schema_revision,
        schema_revision=migrate.head_revision(),
        counts=counts,
        previous_backup_id=previous.id,
        previous_database_file=None,
        sessions_revoked=True,
    )


def save_upload(settings: Settings, stream: IO[bytes], limit: int) -> Path:
    """Copy an uploaded file into the backup directory under a random name (never the client's)."""
    store = store_for(settings)
    store.ensure()
    dest = store.directory / f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
    written = 0
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                written += len(chunk)
                if written > limit:
                    raise PayloadTooLarge(f"the upload exceeds {limit} bytes")
                out.write(chunk)
    except BaseException as exc:
        dest.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(store.directory) from None
        raise
    if written == 0:
        dest.unlink(missing_ok=True)
        raise InvalidBackup("the uploaded file is empty")
    return dest


def restore_upload(
    settings: Settings, stream: IO[bytes], *, engine: Engine | None = None, alerts: AlertCenter | None = None
) -> RestoreRead:
    """Save an uploaded file under a random name, restore from it, delete it."""
    path = save_upload(settings, stream, settings.max_upload_bytes)
    try:
        return restore_file(settings, path, engine=engine, alerts=alerts, label="uploaded file")
    finally:
        path.unlink(missing_ok=True)
