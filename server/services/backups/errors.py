"""What backups and restores raise, beyond the common DomainError tree; disk-full detection."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from server.errors import Conflict, DomainError, InsufficientStorage


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


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (28, 122):  # ENOSPC, EDQUOT
        return True
    return isinstance(exc, sqlite3.Error) and "full" in str(exc).lower()


def disk_full(where: Path) -> InsufficientStorage:
    return InsufficientStorage(
        f"the disk holding {where} is full; free some space (or point MODELTRAIN_BACKUP_DIR at another "
        "disk) and retry — nothing was changed",
        code="disk_full",
    )
