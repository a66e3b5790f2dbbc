"""Uploaded files travel in backups: counted in the manifest, restored with the database, and an archive
whose extra members are not exactly ``files/<2 hex>/<uuid>`` is refused (zip-slip; docs/security.md, D4)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.services.backups.archive import extract_backup
from server.services.backups.errors import InvalidBackup
from server.services.backups.store import store_for
from server.settings import Settings
from tests.server.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, bearer, login
from tests.server.file_corpus import image_bytes


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    return make_settings(
        database_url=f"sqlite:///{tmp_path / 'data' / 'modeltrain.db'}", backup_schedule="off"
    )


def upload(client: TestClient, token: str, name: str, data: bytes) -> str:
    r = client.post(
        "/api/files", files={"file": (name, data, "application/octet-stream")}, headers=bearer(token)
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_files_are_in_the_backup_and_come_back_on_restore(
    client: TestClient, admin_token: str, settings
) -> None:
    picture = image_bytes("PNG")
    kept = upload(client, admin_token, "kept.png", picture)
    note = upload(client, admin_token, "note.txt", b"remember the milk")
    made = client.post("/api/backups", headers=bearer(admin_token)).json()
    assert made["verified"] is True, made
    archive = store_for(settings).archive_path(made["id"])
    with tarfile.open(archive, "r:gz") as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest["files"]["count"] == 2
    assert {n.rsplit("/", 1)[-1] for n in names if n.startswith("files/")} == {kept, note}
    assert not any(n.endswith(".txt") for n in names)  # the text caches are made again

    assert client.delete(f"/api/files/{kept}", headers=bearer(admin_token)).status_code == 204
    later = upload(client, admin_token, "later.txt", b"not in the backup")

    r = client.post(f"/api/backups/{made['id']}/restore", headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    token = login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    got = client.get(f"/api/files/{kept}", headers=bearer(token))
    assert got.status_code == 200 and got.content == picture
    assert client.get(f"/api/files/{later}", headers=bearer(token)).status_code == 404
    stored = {p.name for p in (settings.data_dir / "files").rglob("*") if p.is_file()}
    assert later not in stored and kept in stored


def _archive(tmp_path: Path, extra: list[tuple[str, bytes]], files_meta: dict | None) -> Path:
    """A real backup's database with hand-made extra members."""
    import sqlite3

    db = tmp_path / "db.sqlite3"
    sqlite3.connect(db).close()
    payload = db.read_bytes()
    manifest = {
        "format": "modeltrain-backup",
        "format_version": 1,
        "database": "sqlite",
        "file": "modeltrain.sqlite3",
    }
    manifest |= {"size": len(payload), "sha256": __import__("hashlib").sha256(payload).hexdigest()}
    manifest |= {"schema_revision": "0015", "counts": {}}
    if files_meta is not None:
        manifest["files"] = files_meta
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, body in [
            ("manifest.json", json.dumps(manifest).encode()),
            ("modeltrain.sqlite3", payload),
            *extra,
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    path = tmp_path / "hand.tar.gz"
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize(
    "name",
    [
        "files/../../evil",
        "/etc/passwd",
        "files/ab/not-a-uuid",
        "files/zz/0f0e1e2a-0000-4000-8000-000000000000",
    ],
)
def test_an_archive_with_other_members_is_refused(tmp_path: Path, name: str) -> None:
    source = _archive(tmp_path, [(name, b"x")], {"count": 1, "size": 1})
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(InvalidBackup, match="unexpected extra files"):
        extract_backup(source, dest)
    assert not (tmp_path / "evil").exists()


def test_an_archive_with_fewer_files_than_its_manifest_is_refused(tmp_path: Path) -> None:
    good = "files/0f/0f0e1e2a-0000-4000-8000-000000000000"
    source = _archive(tmp_path, [(good, b"x")], {"count": 2, "size": 2})
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(InvalidBackup, match="files are missing"):
        extract_backup(source, dest)
