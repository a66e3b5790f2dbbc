from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from server.schemas.common import StrictModel


class BackupRead(BaseModel):
    id: str
    created_at: datetime
    #: Size and SHA-256 of the archive file (what a download gives you).
    size: int
    sha256: str
    schema_revision: str
    app_version: str
    keep: bool
    verified: bool
    kind: str
    verify_error: str | None = None
    counts: dict[str, int] = {}


class BackupPage(BaseModel):
    items: list[BackupRead]
    total: int


class BackupCreate(StrictModel):
    keep: bool = False


class BackupUpdate(StrictModel):
    keep: bool


class RestoreRead(BaseModel):
    source: str
    database: str
    schema_revision_before: str
    schema_revision: str
    #: Rows in the restored database, per table.
    counts: dict[str, int]
    #: The backup of the database that was replaced (kept), if one could be made.
    previous_backup_id: str | None
    previous_database_file: str | None
    sessions_revoked: bool
