"""The archive format: writing, reading and verifying backup files.

One ``<id>.tar.gz`` per backup holds ``manifest.json`` (first) and the database —
``modeltrain.sqlite3`` (made with SQLite's online backup API, never a copy of the live file) or
``modeltrain.pgdump`` (``pg_dump -Fc``) — then the uploaded files (``files/<2 hex>/<uuid>``, counted
in the manifest's ``files``). Reading also accepts a bare ModelTrain SQLite file or PostgreSQL dump.
Names inside archives are never used as paths (zip-slip; docs/security.md, D4), but for uploaded files'
names, which must have that exact shape (:data:`FILE_MEMBER`) to be written under the scratch directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.errors import NotFound
from server.services.backups.checks import PGDUMP_MAGIC, check_pg_dump, check_sqlite_database
from server.services.backups.errors import InvalidBackup, SchemaTooNew, disk_full, is_disk_full
from server.services.backups.files import CHUNK, HashingWriter, sha256_file
from server.settings import Settings

FORMAT = "modeltrain-backup"
FORMAT_VERSION = 1
MANIFEST_MEMBER = "manifest.json"
SQLITE_MEMBER = "modeltrain.sqlite3"
PG_MEMBER = "modeltrain.pgdump"
SQLITE_MAGIC = b"SQLite format 3\x00"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
MAX_MANIFEST_BYTES = 64 * 1024
#: gzip level 1: about twice as fast as the default 6 for a few percent more bytes (bench/backup_restore.py).
COMPRESS_LEVEL = 1


#: The only member names accepted after the database: uploaded files (services/files.py's storage keys).
FILE_MEMBER = re.compile(r"files/[0-9a-f]{2}/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def stored_files(data_dir: Path) -> list[tuple[str, Path]]:
    """The uploaded files under ``<data dir>/files`` (member name, path), in a stable order. The text
    caches beside them are left out: they are made again from the files when needed."""
    root = data_dir / "files"
    if not root.is_dir():
        return []
    found = []
    for path in root.glob("*/*"):
        name = f"files/{path.parent.name}/{path.name}"
        if FILE_MEMBER.fullmatch(name) and path.is_file():
            found.append((name, path))
    return sorted(found)


def write_archive(
    part: Path, manifest: dict[str, Any], payload: Path, files: list[tuple[str, Path]] | None = None
) -> tuple[str, int]:
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw:
        hashing = HashingWriter(raw)
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
                for name, path in files or []:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = path.stat().st_size, 0o600, int(time.time())
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
        raw.flush()
        os.fsync(raw.fileno())
    return hashing.digest.hexdigest(), hashing.size


@dataclass
class Extracted:
    database: str  # sqlite | postgresql
    path: Path
    manifest: dict[str, Any] | None
    schema_revision: str
    counts: dict[str, int]
    #: The uploaded files the archive holds (``<dest>/files``); None when it holds none (an older backup).
    files_dir: Path | None = None


def _sniff(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(16)
    except OSError as exc:
        raise InvalidBackup(f"cannot read the file: {exc.strerror}") from None


def extract_backup(source: Path, dest_dir: Path) -> Extracted:
    """Validate ``source`` (a backup archive, or a bare ModelTrain SQLite file) and write its database
    into ``dest_dir``. Nothing outside ``dest_dir`` is written; names inside archives are never used
    as paths (zip-slip; docs/security.md, D4). Raises InvalidBackup / SchemaTooNew / InsufficientStorage."""
    head = _sniff(source)
    if head.startswith(SQLITE_MAGIC):
        dest = dest_dir / SQLITE_MEMBER
        try:
            shutil.copyfile(source, dest)  # an uploaded or operator-given file, not the live database
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(dest_dir) from None
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
        tar = tarfile.open(source, mode="r:gz")  # noqa: SIM115 - closed in the finally below
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InvalidBackup(f"the archive is damaged or truncated ({type(exc).__name__})") from None
    try:
        members = iter(tar)
        first = next(members, None)
        if (
            first is None
            or first.name != MANIFEST_MEMBER
            or not first.isreg()
            or first.size > MAX_MANIFEST_BYTES
        ):
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
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                written += len(chunk)
                if written > manifest["size"]:
                    raise InvalidBackup("the archive does not match its manifest (too long)")
                digest.update(chunk)
                out.write(chunk)
        if written != manifest["size"]:
            raise InvalidBackup("the archive is truncated")
        if digest.hexdigest() != manifest["sha256"]:
            raise InvalidBackup("checksum mismatch: the backup is damaged")
        files_dir = _extract_files(tar, members, manifest, dest_dir)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidBackup(f"the archive is damaged or truncated ({type(exc).__name__})") from None
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(dest_dir) from None
        raise InvalidBackup(
            f"the archive is damaged or truncated ({exc.strerror or type(exc).__name__})"
        ) from None
    finally:
        tar.close()
    if manifest["database"] == "sqlite":
        facts = check_sqlite_database(dest)
    else:
        facts = check_pg_dump(dest)
        facts["counts"] = dict(manifest.get("counts") or {})
    if facts["schema_revision"] != manifest["schema_revision"]:
        raise InvalidBackup("the archive does not match its manifest (schema revision differs)")
    return Extracted(
        manifest["database"], dest, manifest, facts["schema_revision"], facts["counts"], files_dir
    )


def _extract_files(
    tar: tarfile.TarFile, members: Iterator[tarfile.TarInfo], manifest: dict[str, Any], dest_dir: Path
) -> Path | None:
    """The uploaded files after the database: only ``files/<2 hex>/<uuid>`` regular files, as many and
    as large as the manifest says, written under ``dest_dir/files`` (the name is checked, then used)."""
    expected = manifest.get("files")
    if expected is None:
        if next(members, None) is not None:
            raise InvalidBackup("not a ModelTrain backup (unexpected extra files in the archive)")
        return None
    if not isinstance(expected, dict) or not all(isinstance(expected.get(k), int) for k in ("count", "size")):
        raise InvalidBackup("not a ModelTrain backup (manifest lists its files wrongly)")
    root = dest_dir / "files"
    root.mkdir(mode=0o700)
    count = size = 0
    for member in members:
        if not member.isreg() or not FILE_MEMBER.fullmatch(member.name):
            raise InvalidBackup("not a ModelTrain backup (unexpected extra files in the archive)")
        count += 1
        size += member.size
        if count > expected["count"] or size > expected["size"]:
            raise InvalidBackup("the archive does not match its manifest (more files than it lists)")
        target = dest_dir / member.name
        target.parent.mkdir(mode=0o700, exist_ok=True)
        handle = tar.extractfile(member)
        assert handle is not None
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(handle, out, CHUNK)
    if count != expected["count"] or size != expected["size"]:
        raise InvalidBackup("the archive is truncated (files are missing)")
    return root


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
    expected = {"sqlite": SQLITE_MEMBER, "postgresql": PG_MEMBER}.get(str(manifest.get("database")))
    if expected is None or manifest.get("file") != expected:
        raise InvalidBackup("not a ModelTrain backup (manifest names an unexpected database)")
    if not isinstance(manifest.get("size"), int) or not re.fullmatch(
        r"[0-9a-f]{64}", str(manifest.get("sha256"))
    ):
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
        return Extracted(result.database, path, result.manifest, result.schema_revision, result.counts, None)
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
