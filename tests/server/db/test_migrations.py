"""Migrations match the models, round-trip, and snapshot an existing SQLite file first."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.orm import Session

import server.db.models  # noqa: F401
from server.db import migrate
from server.db.base import Base
from server.db.session import create_db_engine, read_only
from server.services.knowledge import index
from tests.server.conftest import database_url

ROOT = Path(__file__).resolve().parents[3]


def _engine(tmp_path: Path):
    return create_db_engine(f"sqlite:///{tmp_path / 'm.db'}")


def _suite_engine(tmp_path: Path):
    """SQLite, or a fresh PostgreSQL database on the PostgreSQL run (MODELTRAIN_TEST_POSTGRES=1)."""
    return create_db_engine(database_url(tmp_path))


def _models_diff(conn: Connection) -> list:
    """What the database behind ``conn`` has that the models do not (and the reverse), as the migrations
    check sees it (``migrate.include_object`` leaves out what the models do not describe on purpose)."""
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "include_object": migrate.include_object}
    )
    return compare_metadata(context, Base.metadata)


def test_upgrade_head_yields_exactly_the_models_schema(tmp_path: Path) -> None:
    engine = _suite_engine(tmp_path)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        diff = _models_diff(conn)
    engine.dispose()
    assert diff == []


def test_downgrade_and_upgrade_round_trip(tmp_path: Path) -> None:
    engine = _suite_engine(tmp_path)
    migrate.upgrade(engine)
    head = migrate.current_revision(engine)
    migrate.downgrade(engine, "base")
    assert migrate.current_revision(engine) is None
    tables = set(inspect(engine).get_table_names())
    assert tables <= {"alembic_version"}
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == head == migrate.head_revision()
    engine.dispose()


@pytest.mark.sqlite_only
def test_existing_database_is_snapshotted_before_upgrade(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE precious (v TEXT)")
        conn.execute("INSERT INTO precious VALUES ('keep me')")
    engine = _engine(tmp_path)
    snapshot = migrate.upgrade(engine, tmp_path / "snapshots")
    engine.dispose()
    assert snapshot is not None and snapshot.parent == tmp_path / "snapshots"
    assert snapshot.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(snapshot) as conn:
        assert conn.execute("SELECT v FROM precious").fetchall() == [("keep me",)]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.sqlite_only
def test_fresh_database_is_not_snapshotted(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    assert migrate.upgrade(engine, tmp_path / "snapshots") is None
    assert migrate.upgrade(engine, tmp_path / "snapshots") is None  # already at head
    engine.dispose()
    assert not (tmp_path / "snapshots").exists()


def test_a_schema_newer_than_the_app_is_refused(tmp_path: Path) -> None:
    from server.errors import Conflict

    engine = _suite_engine(tmp_path)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    with pytest.raises(Conflict) as err:
        migrate.upgrade(engine)
    assert err.value.code == "schema_too_new"
    engine.dispose()


@pytest.mark.sqlite_only
def test_every_pooled_connection_has_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    migrate.upgrade(engine)
    reads = read_only(engine)
    conns = [reads.connect() for _ in range(5)]
    try:
        for conn in conns:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        for conn in conns:
            conn.close()
        engine.dispose()


def test_schema_head_constant_matches_the_migration_scripts() -> None:
    assert migrate.script_head() == migrate.SCHEMA_HEAD


# --- a new SQLite database gets the schema file (server/migrations/sqlite_schema.sql) ---------------


@pytest.mark.sqlite_only
def test_the_schema_file_is_what_the_migrations_produce(tmp_path: Path) -> None:
    generated = migrate.write_sqlite_schema(tmp_path / "schema.sql")
    assert migrate.SQLITE_SCHEMA_FILE.read_text(encoding="utf-8") == generated, (
        "server/migrations/sqlite_schema.sql is out of date: run `make regen-schema`"
    )


@pytest.mark.sqlite_only
def test_a_new_sqlite_database_gets_the_schema_file_without_alembic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_alembic(_url: str):
        raise AssertionError("Alembic was used for a new database")

    monkeypatch.setattr(migrate, "alembic_config", no_alembic)
    engine = _engine(tmp_path)
    assert migrate.upgrade(engine, tmp_path / "snapshots") is None
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()
    assert not (tmp_path / "snapshots").exists()
    # The same schema, full-text tables and triggers included, as the migrations give.
    schema_file = migrate.SQLITE_SCHEMA_FILE.read_text(encoding="utf-8")
    assert migrate.dump_sqlite_schema(tmp_path / "m.db") == schema_file
    with sqlite3.connect(tmp_path / "m.db") as conn:  # the full-text index and its tokenizer work
        conn.execute("INSERT INTO conversations_fts(rowid, title) VALUES (1, 'héllo wörld')")
        hits = conn.execute("SELECT rowid FROM conversations_fts WHERE conversations_fts MATCH 'hello'")
        assert hits.fetchall() == [(1,)]


@pytest.mark.sqlite_only
def test_a_schema_file_of_another_revision_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "stale.sql"
    stale.write_text("-- revision: 0001\nCREATE TABLE wrong (x);\n", encoding="utf-8")
    monkeypatch.setattr(migrate, "SQLITE_SCHEMA_FILE", stale)
    engine = _engine(tmp_path)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert "wrong" not in inspect(engine).get_table_names()
    engine.dispose()


def test_sql_statements_split_as_sqlite_parses() -> None:
    script = (
        "-- a comment\n"
        "CREATE TABLE t (x TEXT DEFAULT 'a;b');\n"
        "\n"
        "CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN INSERT INTO t VALUES ('x'); DELETE FROM t; END;\n"
        "INSERT INTO t VALUES ('--not a comment');\n"
    )
    assert migrate.sql_statements(script) == [
        "CREATE TABLE t (x TEXT DEFAULT 'a;b');",
        "CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN INSERT INTO t VALUES ('x'); DELETE FROM t; END;",
        "INSERT INTO t VALUES ('--not a comment');",
    ]
    with pytest.raises(ValueError, match="incomplete"):
        migrate.sql_statements("CREATE TABLE t (x\n")


@pytest.mark.sqlite_only
def test_sqlite_vec_tables_made_at_run_time_are_left_out_of_the_checks(tmp_path: Path) -> None:
    """The knowledge index's vec0 tables, their shadow tables and triggers (services/knowledge/index.py)
    are no part of the models, the migrations' comparison or the schema file."""
    engine = _engine(tmp_path)
    migrate.upgrade(engine)
    with Session(engine) as session, session.begin():
        assert index.ensure_vec_index(session, 768)
    with engine.connect() as conn:
        names = set(conn.exec_driver_sql("SELECT name FROM sqlite_master").scalars())
        assert {"knowledge_vec_768", "knowledge_vec_768_chunks", "knowledge_vec_768_ai"} <= names
        diff = _models_diff(conn)
    engine.dispose()
    assert diff == []
    assert "knowledge_vec" not in migrate.dump_sqlite_schema(tmp_path / "m.db")


@pytest.mark.sqlite_only
def test_a_snapshot_killed_midway_leaves_no_half_snapshot(tmp_path: Path) -> None:
    """The copy is written as ``.part`` and renamed when whole: a kill while copying leaves no file under a
    snapshot's name (restoring it would give an empty database), and the next snapshot removes the rest."""
    db = tmp_path / "big.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE blobs (v BLOB)")
        conn.executemany("INSERT INTO blobs VALUES (randomblob(65536))", [()] * 1200)  # ~75 MiB
    snapshots = tmp_path / "snapshots"
    code = "import sys; from pathlib import Path; from server.db.migrate import snapshot_sqlite; "
    code += "snapshot_sqlite(Path(sys.argv[1]), Path(sys.argv[2]), 'pre-x')"
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(snapshots)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if any(p.name.endswith(".part") and p.stat().st_size > 0 for p in _entries(snapshots)):
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the snapshot finished before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [p.name for p in _entries(snapshots) if p.name.endswith(".db")] == []
    snapshot = migrate.snapshot_sqlite(db, snapshots, "pre-x")
    assert [p.name for p in _entries(snapshots)] == [snapshot.name]
    with sqlite3.connect(snapshot) as conn:
        assert conn.execute("SELECT count(*) FROM blobs").fetchone() == (1200,)


def _entries(directory: Path) -> list[Path]:
    return list(directory.iterdir()) if directory.is_dir() else []
