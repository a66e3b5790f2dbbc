"""Backups and restore through the API and the CLI (docs/security.md, E3, E4, E6 and D4)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from server.app import create_app
from server.cli import main as cli_main
from server.db.session import session_scope
from server.services import backups
from server.services.knowledge import index
from server.settings import Settings
from tests.server.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, BASE_URL, bearer, login
from tests.server.ops_support import (
    TmpfsMount,
    build_archive,
    corrupt_index,
    db_members,
    file_hash,
    integrity,
    logical_hash,
    populate,
    restore_logging,
)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'modeltrain.db'}"


@pytest.fixture(autouse=True)
def _undo_cli_logging() -> Iterator[None]:
    yield from restore_logging()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    return make_settings(database_url=sqlite_url(tmp_path), backup_schedule="off")


def db_path(settings: Settings) -> Path:
    return settings.data_dir / "modeltrain.db"


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MODELTRAIN_")
        and k not in ("DATABASE_URL", "SECRET_KEY", "INITIAL_ADMIN_PASSWORD", "LOG_LEVEL", "CORS_ORIGINS")
    }
    env["MODELTRAIN_DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.fixture
def cli_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("MODELTRAIN_") or key in ("DATABASE_URL", "SECRET_KEY", "LOG_LEVEL"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MODELTRAIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no stray .env


# ---------------------------------------------------------------------------------------------------
# API basics
# ---------------------------------------------------------------------------------------------------


def test_backup_list_download_keep_delete(client: TestClient, admin_token: str, settings: Settings) -> None:
    r = client.post("/api/backups", headers=bearer(admin_token))
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["verified"] is True and made["kind"] == "manual" and made["keep"] is False
    assert made["schema_revision"] and made["app_version"]

    r = client.get("/api/backups", headers=bearer(admin_token))
    assert r.status_code == 200
    items = r.json()["items"]
    assert [b["id"] for b in items] == [made["id"]]
    assert set(items[0]) >= {
        "id",
        "created_at",
        "size",
        "sha256",
        "schema_revision",
        "app_version",
        "keep",
        "verified",
    }

    r = client.get(f"/api/backups/{made['id']}/download", headers=bearer(admin_token))
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == made["sha256"]
    assert len(r.content) == made["size"]
    manifest = json.loads(db_members_from_bytes(r.content)[0])
    assert manifest["schema_revision"] == made["schema_revision"]
    assert manifest["counts"]["users"] == 1

    r = client.patch(f"/api/backups/{made['id']}", json={"keep": True}, headers=bearer(admin_token))
    assert r.status_code == 200 and r.json()["keep"] is True
    assert (
        client.patch(
            f"/api/backups/{made['id']}", json={"keep": True, "path": "/x"}, headers=bearer(admin_token)
        ).status_code
        == 422
    )

    r = client.delete(f"/api/backups/{made['id']}", headers=bearer(admin_token))
    assert r.status_code == 204
    assert client.get("/api/backups", headers=bearer(admin_token)).json()["items"] == []


def db_members_from_bytes(data: bytes) -> tuple[bytes, bytes]:
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["manifest.json", "modeltrain.sqlite3"]
        return tar.extractfile(members[0]).read(), tar.extractfile(members[1]).read()  # type: ignore[union-attr]


def test_backup_files_are_private_and_apart_from_the_database(
    client: TestClient, admin_token: str, settings: Settings
) -> None:
    made = client.post("/api/backups", headers=bearer(admin_token)).json()
    directory = settings.resolved_backup_dir
    assert directory.resolve() != db_path(settings).parent.resolve()
    assert not directory.resolve().is_relative_to(db_path(settings).parent.resolve())
    assert (directory.stat().st_mode & 0o777) == 0o700
    for name in (f"{made['id']}.tar.gz", f"{made['id']}.json"):
        assert ((directory / name).stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(
    "bad_id",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "..",
        "%2e%2e%2f",
        "20261127T030000Z-1a2b3c4d.tar.gz",
        "C:%5Cwindows",
        "x%00y",
        "20261127T030000Z-1a2b3c4d%2F..",
        "20261127T030000Z-1A2B3C4D",
    ],
)
def test_backup_ids_are_never_paths(client: TestClient, admin_token: str, bad_id: str) -> None:
    for method, suffix in (("GET", "/download"), ("POST", "/restore"), ("DELETE", ""), ("PATCH", "")):
        r = client.request(
            method,
            f"/api/backups/{bad_id}{suffix}",
            headers=bearer(admin_token),
            json={"keep": True} if method == "PATCH" else None,
        )
        assert r.status_code in (404, 405), (method, bad_id, r.status_code, r.text)
        assert r.json()["code"] in ("backup_not_found", "not_found", "method_not_allowed")


def test_backups_are_admin_only(client: TestClient, user_token: str) -> None:
    assert client.get("/api/backups").status_code == 401
    for method, path in (
        ("GET", "/api/backups"),
        ("POST", "/api/backups"),
        ("POST", "/api/backups/upload-restore"),
    ):
        r = client.request(method, path, headers=bearer(user_token))
        assert r.status_code == 403, (method, path, r.status_code)


# ---------------------------------------------------------------------------------------------------
# Consistency under concurrent writes (E3)
# ---------------------------------------------------------------------------------------------------


def test_backup_during_concurrent_writes_is_consistent(client: TestClient, admin_token: str, app) -> None:
    engine = app.state.runtime.engine
    populate(engine, conversations=200, messages_per=5, text_size=200)
    stop = threading.Event()
    written = [0]
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            while not stop.is_set():
                populate(engine, conversations=3, messages_per=5, seed=written[0])
                written[0] += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    made = []
    try:
        # wait (bounded) until the writer is demonstrably running, then back up repeatedly during writes
        deadline = time.monotonic() + 30
        while written[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(3):
            r = client.post("/api/backups", headers=bearer(admin_token))
            assert r.status_code == 201, r.text
            made.append(r.json())
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors, errors
    assert written[0] >= 2
    for info in made:
        assert info["verified"] is True
        _, db = db_members(backups.store_for(app.state.runtime.settings).archive_path(info["id"]))
        copy = Path(app.state.runtime.settings.data_dir).parent / f"check-{info['id']}.db"
        copy.write_bytes(db)
        conn = sqlite3.connect(copy)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            assert (
                conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
                == info["schema_revision"]
            )
            # every writer transaction is all-or-nothing in the copy: 5 messages per conversation
            sizes = conn.execute(
                "SELECT count(m.id) FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id "
                "GROUP BY c.id"
            ).fetchall()
            assert sizes and {s[0] for s in sizes} == {5}
        finally:
            conn.close()


def test_backups_never_copy_the_live_database_file(
    client: TestClient, admin_token: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """E3's static rule, checked at run time: no file-level copy or link of the live DB (or its -wal)."""
    import shutil

    live = db_path(settings).resolve()
    touched: list[str] = []

    def spy(name: str, original: Callable) -> Callable:
        def wrapper(src, *args, **kwargs):
            if Path(src).resolve().name.startswith(live.name) and Path(src).resolve().parent == live.parent:
                touched.append(f"{name}({src})")
            return original(src, *args, **kwargs)

        return wrapper

    for name in ("copyfile", "copy", "copy2", "copyfileobj"):
        if name != "copyfileobj":
            monkeypatch.setattr(shutil, name, spy(name, getattr(shutil, name)))
    monkeypatch.setattr(os, "link", spy("link", os.link))
    r = client.post("/api/backups", headers=bearer(admin_token))
    assert r.status_code == 201
    assert touched == []


# ---------------------------------------------------------------------------------------------------
# Restore (E4)
# ---------------------------------------------------------------------------------------------------


def test_restore_replaces_data_revokes_sessions_and_keeps_the_previous_database(
    client: TestClient, admin_token: str, settings: Settings, create_user: Callable[..., str]
) -> None:
    create_user("before@example.com")
    made = client.post("/api/backups", headers=bearer(admin_token)).json()
    user_token = create_user("after@example.com")  # not in the backup

    r = client.post(f"/api/backups/{made['id']}/restore", headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["counts"]["users"] == 2  # admin + before@
    assert report["schema_revision"] == made["schema_revision"]
    assert report["sessions_revoked"] is True
    previous = report["previous_backup_id"]
    assert previous

    # every session is gone, the server keeps serving, the old data is back
    assert client.get("/api/users/me", headers=bearer(admin_token)).status_code == 401
    assert client.get("/api/users/me", headers=bearer(user_token)).status_code == 401
    token = login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    emails = {u["email"] for u in client.get("/api/users", headers=bearer(token)).json()["items"]}
    assert emails == {ADMIN_EMAIL, "before@example.com"}
    assert integrity(db_path(settings)) == "ok"

    # the database that was replaced is a kept, verified backup holding after@
    listing = {b["id"]: b for b in client.get("/api/backups", headers=bearer(token)).json()["items"]}
    assert listing[previous]["keep"] is True and listing[previous]["verified"] is True
    assert listing[previous]["kind"] == "pre-restore"
    assert listing[previous]["counts"]["users"] == 3
    # the app's own writes keep working on the restored file
    assert (
        client.post(
            "/api/users",
            json={"email": "later@example.com", "password": "later-password-Long-1"},
            headers=bearer(token),
        ).status_code
        == 201
    )


def test_upload_restore_accepts_a_large_valid_backup(
    client: TestClient, admin_token: str, app, settings: Settings
) -> None:
    populate(app.state.runtime.engine, conversations=60, messages_per=10, text_size=6000, incompressible=True)
    made = client.post("/api/backups", headers=bearer(admin_token)).json()
    archive = client.get(f"/api/backups/{made['id']}/download", headers=bearer(admin_token)).content
    assert len(archive) > settings.max_body_bytes  # the upload path has its own, larger limit
    client.delete(f"/api/backups/{made['id']}", headers=bearer(admin_token))
    r = client.post(
        "/api/backups/upload-restore",
        headers=bearer(admin_token),
        files={"file": ("../../evil name.tar.gz", archive, "application/gzip")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["counts"]["messages"] == 600
    assert r.json()["source"] == "uploaded file"
    leftovers = [p.name for p in settings.resolved_backup_dir.iterdir() if p.name.startswith(".upload-")]
    assert leftovers == []
    assert not (settings.resolved_backup_dir.parent / "evil name.tar.gz").exists()


def _bad_inputs(tmp_path: Path, good_archive: Path) -> dict[str, bytes]:
    manifest, db = db_members(good_archive)
    good = good_archive.read_bytes()
    out: dict[str, bytes] = {
        "truncated": good[: len(good) // 2],
        "random bytes": os.urandom(50_000),
        "empty": b"",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("modeltrain.sqlite3", db)
        zf.writestr("manifest.json", manifest)
    out["zip"] = buf.getvalue()

    # a newer schema: a real ModelTrain database whose revision this app does not know
    newer = tmp_path / "newer.db"
    newer.write_bytes(db)
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    conn.commit()
    conn.close()
    out["newer schema"] = newer.read_bytes()

    # a database that fails PRAGMA integrity_check
    broken = tmp_path / "broken.db"
    broken.write_bytes(db)
    conn = sqlite3.connect(broken)
    conn.executescript(
        "CREATE TABLE filler(x TEXT, y TEXT); CREATE INDEX ix_filler_x ON filler(x);"
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
        "INSERT INTO filler SELECT printf('value-%08d', i), printf('other-%08d', i) FROM n;"
    )
    conn.commit()
    conn.close()
    corrupt_index(broken, "ix_filler_x", "y")
    assert integrity(broken) != "ok"
    out["integrity failure"] = broken.read_bytes()

    # another application's SQLite database
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.executescript(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes(body) VALUES ('hi');"
    )
    conn.commit()
    conn.close()
    out["other app sqlite"] = other.read_bytes()

    # another application's Alembic-managed database
    alembic_other = tmp_path / "alembic_other.db"
    conn = sqlite3.connect(alembic_other)
    conn.executescript(
        "CREATE TABLE alembic_version(version_num TEXT); INSERT INTO alembic_version VALUES ('abc');"
        "CREATE TABLE items(id INTEGER);"
    )
    conn.commit()
    conn.close()
    out["other app alembic"] = alembic_other.read_bytes()

    # an archive whose database does not match the manifest's checksum
    meta = json.loads(manifest)
    meta["sha256"] = "0" * 64
    out["checksum mismatch"] = build_archive(json.dumps(meta).encode(), "modeltrain.sqlite3", db)
    # an archive with a path-traversal member name instead of the database
    out["zip-slip name"] = build_archive(manifest, "../../modeltrain.sqlite3", db)
    # the archive of a newer schema (manifest and database agree)
    meta = json.loads(manifest)
    meta.update(
        schema_revision="9999_future",
        sha256=hashlib.sha256(out["newer schema"]).hexdigest(),
        size=len(out["newer schema"]),
    )
    out["newer schema archive"] = build_archive(
        json.dumps(meta).encode(), "modeltrain.sqlite3", out["newer schema"]
    )
    return out


EXPECTED_STATUS = {"newer schema": 409, "newer schema archive": 409}


def test_restore_refuses_every_bad_input_and_leaves_the_live_database_alone(
    client: TestClient, admin_token: str, settings: Settings, tmp_path: Path
) -> None:
    made = client.post("/api/backups", headers=bearer(admin_token)).json()
    good = backups.store_for(settings).archive_path(made["id"])
    before = logical_hash(db_path(settings))
    for name, data in _bad_inputs(tmp_path, good).items():
        r = client.post(
            "/api/backups/upload-restore",
            headers=bearer(admin_token),
            files={"file": ("backup.tar.gz", data, "application/octet-stream")},
        )
        assert r.status_code == EXPECTED_STATUS.get(name, 422), (name, r.status_code, r.text)
        body = r.json()
        assert body["code"] in ("invalid_backup", "schema_too_new"), (name, body)
        assert body["message"], name
        assert logical_hash(db_path(settings)) == before, name
        # the app keeps serving with the same sessions (nothing was revoked)
        assert client.get("/api/users/me", headers=bearer(admin_token)).status_code == 200, name
    # no temp files left beside the database or in the backup directory
    assert [
        p.name for p in db_path(settings).parent.iterdir() if ".restore-" in p.name or ".incoming-" in p.name
    ] == []
    assert [b["id"] for b in client.get("/api/backups", headers=bearer(admin_token)).json()["items"]] == [
        made["id"]
    ]


def test_cli_restore_refuses_bad_files_with_the_live_file_unchanged(
    tmp_path: Path, cli_environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["migrate"]) == 0
    assert cli_main(["backup"]) == 0
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    good = backups.store_for(settings).list()[0].path
    live = db_path(settings)
    before = file_hash(live)
    capsys.readouterr()
    for name, data in _bad_inputs(tmp_path, good).items():
        bad = tmp_path / f"bad-{name.replace(' ', '-')}.bin"
        bad.write_bytes(data)
        assert cli_main(["verify-backup", str(bad)]) == 1, name
        assert cli_main(["restore", "--yes", str(bad)]) == 1, name
        err = capsys.readouterr().err
        assert "modeltrain: error:" in err and len(err.strip()) > 30, (name, err)
        assert file_hash(live) == before, name
    assert cli_main(["verify-backup", str(good)]) == 0
    assert cli_main(["restore", "--yes", str(good)]) == 0
    out = capsys.readouterr().out
    assert "restored" in out and "sessions were revoked" in out
    assert integrity(live) == "ok"


def test_cli_restore_refuses_while_another_process_has_the_database_open(
    tmp_path: Path, cli_environment: None
) -> None:
    assert cli_main(["migrate"]) == 0
    assert cli_main(["backup"]) == 0
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    good = backups.store_for(settings).list()[0].path
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('pragma journal_mode=wal');"
            "c.execute('select count(*) from users').fetchone(); print('ready', flush=True); "
            "sys.stdin.read()",
            str(db_path(settings)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        before = logical_hash(db_path(settings))
        assert cli_main(["restore", "--yes", str(good)]) == 1
        assert logical_hash(db_path(settings)) == before
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(timeout=30)
    assert cli_main(["restore", "--yes", str(good)]) == 0


# ---------------------------------------------------------------------------------------------------
# Verification failures are alerts
# ---------------------------------------------------------------------------------------------------


def test_a_backup_of_a_damaged_database_is_marked_failed_and_raises_an_alert(
    client: TestClient, admin_token: str, app, settings: Settings
) -> None:
    populate(app.state.runtime.engine, conversations=100, messages_per=10, text_size=40)
    app.state.runtime.engine.dispose()
    corrupt_index(db_path(settings), "ix_messages_conversation_id_created_at", "conversation_id, updated_at")
    r = client.post("/api/backups", headers=bearer(admin_token))
    assert r.status_code == 201, r.text
    assert r.json()["verified"] is False
    assert "integrity" in r.json()["verify_error"]
    alerts = client.get("/api/alerts", headers=bearer(admin_token)).json()
    active = [a for a in alerts["active"] if a["metric"] == "backup"]
    assert active and active[0]["level"] == "alert" and r.json()["id"] in active[0]["message"]


def test_an_unverified_backup_on_disk_is_an_alert_at_start(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(database_url=sqlite_url(tmp_path), backup_schedule="off")
    with TestClient(create_app(settings), base_url=BASE_URL) as c:
        token = _admin(c)
        made = c.post("/api/backups", headers=bearer(token)).json()
    store = backups.store_for(settings)
    info = store.get(made["id"])
    info.verified, info.verify_error = False, "integrity check failed"
    store.save(info)
    with TestClient(create_app(settings), base_url=BASE_URL) as c:
        token = login(c, ADMIN_EMAIL, ADMIN_PASSWORD)
        active = c.get("/api/alerts", headers=bearer(token)).json()["active"]
        assert any(a["metric"] == "backup" and made["id"] in a["message"] for a in active)


def _admin(c: TestClient) -> str:
    from tests.server.conftest import INITIAL_PASSWORD

    token = login(c, ADMIN_EMAIL, INITIAL_PASSWORD)
    r = c.post(
        "/api/auth/password",
        json={"current_password": INITIAL_PASSWORD, "new_password": ADMIN_PASSWORD},
        headers=bearer(token),
    )
    assert r.status_code == 200
    return r.json()["access_token"]


# ---------------------------------------------------------------------------------------------------
# kill -9 during a backup (E5) and disk full (E6)
# ---------------------------------------------------------------------------------------------------


def test_kill_9_during_backup_leaves_no_half_backup(tmp_path: Path, cli_environment: None) -> None:
    from server.db.session import create_db_engine

    assert cli_main(["migrate"]) == 0
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    engine = create_db_engine(settings.resolved_database_url)
    populate(engine, conversations=300, messages_per=20, text_size=3000, incompressible=True)  # ~20 MB
    engine.dispose()
    directory = settings.resolved_backup_dir
    store = backups.store_for(settings)
    markers = {
        "snapshot": lambda: any(p.name.startswith(".tmp-") for p in _entries(directory)),
        "archive": lambda: any(p.name.endswith(".part") for p in _entries(directory)),
    }
    for stage, seen in markers.items():
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "backup"],
            env=cli_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not seen() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert proc.poll() is None, f"the backup finished before reaching the {stage} stage"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert store.list() == [], stage  # nothing half-written counts as a backup
        assert integrity(db_path(settings)) == "ok"
    assert any(p.name.startswith(".tmp-") or p.name.endswith(".part") for p in _entries(directory))
    # the next start removes the leftovers (before any new backup) ...
    with TestClient(create_app(settings.model_copy(update={"backup_schedule": "off"})), base_url=BASE_URL):
        names = sorted(p.name for p in _entries(directory))
        assert names == [".lock"], names
    # ... and the next backup succeeds
    assert cli_main(["backup"]) == 0
    names = sorted(p.name for p in _entries(directory))
    assert len(store.list()) == 1
    assert all(not n.startswith(".tmp-") and not n.endswith(".part") for n in names), names


def test_a_start_leaves_the_files_of_a_backup_in_progress_alone(settings: Settings) -> None:
    """Another process making a backup holds the lock: its work files are not leftovers."""
    store = backups.store_for(settings)
    store.ensure()
    work = store.directory / ".tmp-20261205T000000Z-0123abcd"
    work.mkdir()
    with store.lock():
        assert backups.remove_leftovers(settings) == 0
        assert work.is_dir()
    assert backups.remove_leftovers(settings) == 1
    assert not work.exists()


def _entries(directory: Path) -> list[Path]:
    return list(directory.iterdir()) if directory.is_dir() else []


@pytest.fixture
def small_backup_disk(tmp_path: Path) -> Iterator[TmpfsMount]:
    mount = TmpfsMount(tmp_path / "small-disk", "256k")
    with mount:
        yield mount


def test_disk_full_during_backup_is_a_clear_error_and_recovers_without_restart(
    make_settings: Callable[..., Settings], tmp_path: Path, small_backup_disk: TmpfsMount
) -> None:
    settings = make_settings(
        database_url=sqlite_url(tmp_path), backup_schedule="off", backup_dir=small_backup_disk.path
    )
    with TestClient(create_app(settings), base_url=BASE_URL) as c:
        token = _admin(c)
        populate(
            c.app.state.runtime.engine, conversations=40, messages_per=10, text_size=2000, incompressible=True
        )
        before = logical_hash(db_path(settings))
        r = c.post("/api/backups", headers=bearer(token))
        assert r.status_code == 507, r.text
        assert r.json()["code"] == "disk_full" and "full" in r.json()["message"]
        assert c.get("/api/backups", headers=bearer(token)).json()["items"] == []
        assert sorted(p.name for p in small_backup_disk.path.iterdir()) == [".lock"]  # partials deleted
        assert logical_hash(db_path(settings)) == before and integrity(db_path(settings)) == "ok"
        # the app keeps working, and once there is room the same app backs up fine
        assert c.get("/api/users/me", headers=bearer(token)).status_code == 200
        small_backup_disk.remount("64m")
        r = c.post("/api/backups", headers=bearer(token))
        assert r.status_code == 201 and r.json()["verified"] is True


def test_cli_backup_to_a_full_disk_exits_non_zero(
    tmp_path: Path, cli_environment: None, small_backup_disk: TmpfsMount, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.db.session import create_db_engine

    assert cli_main(["migrate"]) == 0
    engine = create_db_engine(f"sqlite:///{tmp_path / 'data' / 'modeltrain.db'}")
    populate(engine, conversations=40, messages_per=10, text_size=2000, incompressible=True)
    engine.dispose()
    capsys.readouterr()
    assert cli_main(["backup", "--dest", str(small_backup_disk.path)]) == 1
    assert "full" in capsys.readouterr().err
    assert sorted(p.name for p in small_backup_disk.path.iterdir()) == [".lock"]


def test_cli_backup_dest_writes_a_verified_backup_there(
    tmp_path: Path, cli_environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["migrate"]) == 0
    dest = tmp_path / "usb"
    assert cli_main(["backup", "--dest", str(dest)]) == 0
    archives = list(dest.glob("*.tar.gz"))
    assert len(archives) == 1
    assert "verified" in capsys.readouterr().out
    assert cli_main(["verify-backup", str(archives[0])]) == 0
    # a backup id is accepted where a file is expected (ids of the configured directory only)
    assert cli_main(["verify-backup", archives[0].name.removesuffix(".tar.gz")]) != 0


def test_a_backup_keeps_the_knowledge_vector_index_and_its_triggers(
    client: TestClient, admin_token: str, settings: Settings
) -> None:
    """sqlite-vec's run-time tables (services/knowledge/index.py) travel with the backup and work after a
    restore: the restored chunk is found in them, and deleting it empties them."""
    runtime = client.app.state.runtime
    vector = struct.pack("<8f", 1, -1, 1, 1, -1, 1, 1, -1)
    with session_scope(runtime.session_factory) as session:
        owner = session.execute(text("SELECT id FROM users")).scalars().first()
        file_id = uuid.uuid4().hex
        session.execute(
            text(
                "INSERT INTO files (id, owner_id, name, mime, size, sha256, kind, storage_key, text_chars, "
                "tokens, created_at, updated_at) VALUES (:id, :owner, 'a.txt', 'text/plain', 1, :sha, "
                "'document', :key, 1, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"id": file_id, "owner": owner, "sha": "0" * 64, "key": f"files/x/{file_id}"},
        )
        assert index.ensure_vec_index(session, 8)
        session.execute(
            text(
                "INSERT INTO knowledge_chunks (id, file_id, embedding_model, ordinal, text, char_start, "
                "char_end, tokens, embedding) VALUES (7, :f, 'm', 0, 'a passage', 0, 9, 2, :e)"
            ),
            {"f": file_id, "e": vector},
        )
    made = client.post("/api/backups", headers=bearer(admin_token)).json()
    assert made["verified"] is True, made
    with session_scope(runtime.session_factory) as session:
        session.execute(text("DELETE FROM knowledge_chunks"))
    r = client.post(f"/api/backups/{made['id']}/restore", headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    runtime = client.app.state.runtime
    with session_scope(runtime.session_factory) as session:
        assert session.execute(text("SELECT chunk_id FROM knowledge_vec_8")).scalars().all() == [7]
        session.execute(text("DELETE FROM knowledge_chunks"))
        assert session.execute(text("SELECT count(*) FROM knowledge_vec_8")).scalar_one() == 0
    assert integrity(db_path(settings)) == "ok"
