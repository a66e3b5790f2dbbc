"""The backup directory: ``<id>.tar.gz`` archives with their ``<id>.json`` sidecars, retention, the lock.

Ids look like ``20261127T030000Z-1a2b3c4d``; they are matched against that pattern before any file is
touched, so a caller can never name a path (docs/security.md, D4).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from server.errors import NotFound
from server.schemas.backup import BackupRecord
from server.services.backups.files import ensure_private_dir, file_lock, write_json_atomic
from server.settings import Settings

log = logging.getLogger(__name__)

ARCHIVE_SUFFIX = ".tar.gz"
SIDECAR_SUFFIX = ".json"
ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")
LOCK_FILE = ".lock"
UPLOAD_PREFIX = ".upload-"
RESTORE_PREFIX = ".restore-"


def _read_sidecar(sidecar: Path, archive: Path) -> BackupRecord:
    data: dict[str, Any] = json.loads(sidecar.read_text(encoding="utf-8"))
    return BackupRecord.model_validate({**data, "path": archive})


def new_backup_id(now: datetime | None = None) -> str:
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


class BackupStore:
    """The files of one backup directory. Never takes a path from a caller: only validated ids."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def ensure(self) -> None:
        ensure_private_dir(self.directory)

    @contextlib.contextmanager
    def lock(self, wait: float = 0.0) -> Iterator[None]:
        self.ensure()
        with file_lock(self.directory / LOCK_FILE, wait=wait):
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

    def list(self) -> list[BackupRecord]:
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
                info = _read_sidecar(entry, archive)
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("ignoring an unreadable backup description %s", name)
                continue
            if info.id == backup_id:
                items.append(info)
        items.sort(key=lambda b: (b.created_at, b.id), reverse=True)
        return items

    def get(self, backup_id: str) -> BackupRecord:
        sidecar = self.sidecar_path(backup_id)
        archive = self.archive_path(backup_id)
        if not sidecar.is_file() or not archive.is_file() or archive.is_symlink():
            raise NotFound("backup not found", code="backup_not_found")
        try:
            return _read_sidecar(sidecar, archive)
        except (OSError, ValueError, KeyError, TypeError):
            raise NotFound("backup not found", code="backup_not_found") from None

    def save(self, info: BackupRecord) -> None:
        data = info.model_dump(mode="json")
        # "+00:00" rather than pydantic's "Z": datetime.fromisoformat reads it on Python 3.10 too.
        data["created_at"] = info.created_at.isoformat()
        write_json_atomic(self.sidecar_path(info.id), data)

    def set_keep(self, backup_id: str, keep: bool) -> BackupRecord:
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
                name.startswith((UPLOAD_PREFIX, RESTORE_PREFIX))
                and time.time() - entry.stat().st_mtime > 86400
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

    def prune(self, keep_days: int, now: datetime | None = None) -> builtins.list[str]:
        """Delete backups older than ``keep_days`` unless marked keep; never the newest verified one."""
        now = now or datetime.now(timezone.utc)
        items = self.list()
        newest_verified = next((b.id for b in items if b.verified), None)
        removed: builtins.list[str] = []  # ``list`` is the method above, in this class
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
