from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

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


class BackupRecord(BackupRead):
    """One backup as the backup service handles it and its ``<id>.json`` sidecar stores it: the API
    fields plus the kind of database. ``path`` (the archive file) is set when the backup is made or read
    from its directory, and never stored nor sent. A route declaring ``response_model=BackupRead`` sends
    the API fields only."""

    database: str = "sqlite"
    path: Path = Field(exclude=True)

    @field_validator("created_at")
    @classmethod
    def _utc_when_naive(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


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
