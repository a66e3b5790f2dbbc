"""Backups and restore (数据备份; docs/security.md, E3, E4, E6, D4).

Format: one ``<id>.tar.gz`` per backup holding ``manifest.json`` (first) and the database —
``modeltrain.sqlite3`` (made with SQLite's online backup API, never a copy of the live file) or
``modeltrain.pgdump`` (``pg_dump -Fc``) — plus a ``<id>.json`` sidecar with what the listing needs
(archive size and sha256, keep flag, verification result). The sidecar is written last: an archive
without one (a backup killed half-way) is never listed and is cleaned up by the next backup.

Ids look like ``20261127T030000Z-1a2b3c4d``; they are matched against that pattern before any file is
touched, so a caller can never name a path (D4). Writers hold ``.lock`` in the backup directory.

Restore validates everything first into a temp file beside the live database, migrates that copy
forward and revokes every session in it, then swaps it in (see :mod:`.restore`). Anything refused
leaves the live database untouched.

The parts, each importing only those listed before it: ``errors``, ``files`` (fsync, atomic JSON,
the lock), ``store`` (the backup directory, retention), ``checks`` (SQLite and PostgreSQL),
``archive`` (write, read, verify), ``create``, ``restore`` (and upload-restore), ``schedule`` (the
daily run and the lifespan hooks). This module only re-exports their public names.
"""

from __future__ import annotations

from server.services.backups.archive import (
    COMPRESS_LEVEL,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_MEMBER,
    PG_MEMBER,
    SQLITE_MEMBER,
    Extracted,
    extract_backup,
    verify_archive,
    verify_backup_file,
)
from server.services.backups.checks import (
    COUNTED_TABLES,
    EXPECTED_TABLES,
    check_pg_dump,
    check_sqlite_database,
)
from server.services.backups.create import create_backup
from server.services.backups.errors import BackupBusy, DatabaseInUse, InvalidBackup, SchemaTooNew
from server.services.backups.files import sha256_file
from server.services.backups.restore import (
    QUIESCE_TIMEOUT,
    release_request_session,
    restore_backup,
    restore_file,
    restore_upload,
    save_upload,
)
from server.services.backups.schedule import (
    LEASE_SECONDS,
    SCHEDULE_LEASE,
    BackupScheduler,
    alert_on_unverified,
    remove_leftovers,
    start,
    stop,
)
from server.services.backups.store import (
    ARCHIVE_SUFFIX,
    ID_PATTERN,
    SIDECAR_SUFFIX,
    BackupStore,
    new_backup_id,
    store_for,
)

__all__ = [
    "ARCHIVE_SUFFIX",
    "COMPRESS_LEVEL",
    "COUNTED_TABLES",
    "EXPECTED_TABLES",
    "FORMAT",
    "FORMAT_VERSION",
    "ID_PATTERN",
    "LEASE_SECONDS",
    "MANIFEST_MEMBER",
    "PG_MEMBER",
    "QUIESCE_TIMEOUT",
    "SCHEDULE_LEASE",
    "SIDECAR_SUFFIX",
    "SQLITE_MEMBER",
    "BackupBusy",
    "BackupScheduler",
    "BackupStore",
    "DatabaseInUse",
    "Extracted",
    "InvalidBackup",
    "SchemaTooNew",
    "alert_on_unverified",
    "check_pg_dump",
    "check_sqlite_database",
    "create_backup",
    "extract_backup",
    "new_backup_id",
    "release_request_session",
    "remove_leftovers",
    "restore_backup",
    "restore_file",
    "restore_upload",
    "save_upload",
    "sha256_file",
    "start",
    "stop",
    "store_for",
    "verify_archive",
    "verify_backup_file",
]
