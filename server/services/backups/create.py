"""Making backups: snapshot (SQLite online backup API, or pg_dump), archive, verify what is on disk,
then register it with its sidecar (written last: an archive without one is never listed)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from server import __version__
from server.db.session import create_db_engine, sqlite_path
from server.errors import DomainError, Unavailable
from server.schemas.backup import BackupRecord
from server.services.alerts import AlertCenter
from server.services.backups.archive import (
    FORMAT,
    FORMAT_VERSION,
    PG_MEMBER,
    SQLITE_MEMBER,
    stored_files,
    verify_archive,
    write_archive,
)
from server.services.backups.checks import check_pg_dump, live_counts, pg_dump, sqlite_facts, sqlite_snapshot
from server.services.backups.errors import disk_full, is_disk_full
from server.services.backups.files import fsync_dir, sha256_file
from server.services.backups.store import ARCHIVE_SUFFIX, BackupStore, new_backup_id, store_for
from server.settings import Settings

log = logging.getLogger(__name__)


def create_backup(
    settings: Settings,
    *,
    dest: Path | None = None,
    kind: str = "manual",
    keep: bool = False,
    alerts: AlertCenter | None = None,
    now: datetime | None = None,
    lock_wait: float = 0.0,
) -> BackupRecord:
    """Write, verify and register one backup. ``dest`` overrides the backup directory (CLI ``--dest``).

    A failed verification is recorded in the backup (``verified: false``) and raised as an alert; it is
    returned, not hidden. Disk full gives :class:`InsufficientStorage` and leaves nothing behind.
    """
    store = BackupStore(dest) if dest is not None else store_for(settings)
    with store.lock(wait=lock_wait):
        return create_backup_locked(settings, store, kind=kind, keep=keep, alerts=alerts, now=now)


def create_backup_locked(
    settings: Settings,
    store: BackupStore,
    *,
    kind: str,
    keep: bool,
    alerts: AlertCenter | None,
    now: datetime | None = None,
) -> BackupRecord:
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
            sqlite_snapshot(db_path, payload)
            # Only what the manifest needs here; the full checks run once, on the finished archive.
            # A damaged live database still gets archived (it may be all there is to recover from),
            # but as a failed backup, never a silent success.
            facts = sqlite_facts(payload)
            database = "sqlite"
        else:
            member, payload = PG_MEMBER, work / PG_MEMBER
            engine = create_db_engine(url)
            try:
                counts = live_counts(engine)
                pg_dump(url, payload)
            finally:
                engine.dispose()
            facts = check_pg_dump(payload)
            facts["counts"] = counts
            database = "postgresql"
        files = stored_files(settings.data_dir)
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
            "files": {"count": len(files), "size": sum(p.stat().st_size for _, p in files)},
        }
        archive_sha, archive_size = write_archive(part, manifest, payload, files)
        shutil.rmtree(work, ignore_errors=True)
        # Verify what is on disk, exactly as a restore would read it.
        verify_error = None
        try:
            verify_archive(part)
        except DomainError as exc:
            verify_error = exc.message
        os.replace(part, final)
        info = BackupRecord(
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
        fsync_dir(store.directory)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        part.unlink(missing_ok=True)
        if final.exists() and not store.sidecar_path(backup_id).exists():
            final.unlink(missing_ok=True)
        if is_disk_full(exc):
            log.error("backup failed: the disk holding %s is full", store.directory)
            raise disk_full(store.directory) from None
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
