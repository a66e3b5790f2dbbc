"""Schema migrations: upgrade to head, with a SQLite snapshot taken first so a failed upgrade loses nothing.

A new, empty SQLite database is not migrated step by step: it gets the schema the migrations produce,
from ``server/migrations/sqlite_schema.sql`` (a dump of a freshly migrated database, in one transaction).
That skips importing and running Alembic on a first start (~0.15 s and ~15 MiB in the desktop app).
``make regen-schema`` rewrites the file; tests/server/db/test_migrations.py fails while it differs from
what the migrations produce. Existing databases, and PostgreSQL, always go through Alembic.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config

from server.db.session import create_db_engine, read_only, sqlite_path

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_SCHEMA_FILE = MIGRATIONS_DIR / "sqlite_schema.sql"
_SCHEMA_REVISION_PREFIX = "-- revision: "


#: sqlite-vec's tables (and their shadow tables and triggers), made at run time, not by migrations.
RUNTIME_VEC_PREFIX = "knowledge_vec_"


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Leave out of autogenerate what the ORM models do not describe on purpose: full-text-search objects
    (SQLite's FTS5 virtual tables and their shadow tables, PostgreSQL's ``*_fts`` expression indexes,
    revision 0002), pgvector's ``embedding_vec`` column and its HNSW indexes, which exist only where the
    extension does (revision 0015), and sqlite-vec's ``knowledge_vec_<dims>`` tables with their shadow tables,
    made at run time (services/knowledge/index.py)."""
    if type_ in ("table", "index") and name and ("_fts" in name or name.startswith(RUNTIME_VEC_PREFIX)):
        return False
    return not (
        (type_ == "column" and name == "embedding_vec")
        or (type_ == "index" and name and name.startswith("ix_knowledge_chunks_hnsw_"))
    )


#: The newest revision in server/migrations/versions. Kept here so a start-up on an up-to-date
#: database never imports Alembic (~0.3 s); tests/server/db/test_migrations.py checks it matches.
SCHEMA_HEAD = "0015"


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    return SCHEMA_HEAD


def script_head() -> str:
    """The head according to the migration scripts themselves (imports Alembic)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision, or None for an empty database."""
    with read_only(engine).connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:
            return None


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return {rev.revision for rev in script.walk_revisions()}


#: A snapshot is written under this suffix and renamed when complete: a process killed while copying leaves
#: a ``.part`` file (removed by the next snapshot), never a half snapshot under a snapshot's name.
PARTIAL_SUFFIX = ".part"


def snapshot_sqlite(db_path: Path, dest_dir: Path, label: str) -> Path:
    """Copy a live SQLite database consistently with the online backup API."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for leftover in dest_dir.glob(f"*{PARTIAL_SUFFIX}*"):  # the .part file and its -journal
        leftover.unlink(missing_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    dest = dest_dir / f"{db_path.stem}-{label}-{stamp}.db"
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(partial)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()
    partial.chmod(0o600)
    os.replace(partial, dest)
    return dest


def upgrade(
    engine: Engine, snapshot_dir: Path | None = None, *, from_schema_file: bool = True
) -> Path | None:
    """Upgrade the database behind ``engine`` to head. Returns the pre-upgrade snapshot, if one was taken.

    An existing SQLite file that is behind head is snapshotted first (kept in ``snapshot_dir``). An empty
    SQLite database gets the head schema from :data:`SQLITE_SCHEMA_FILE` (unless ``from_schema_file`` is
    False: then Alembic runs every migration, as it does for PostgreSQL).
    """
    url = engine.url.render_as_string(hide_password=False)
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return None
    if current is not None and current not in known_revisions():
        from server.errors import Conflict

        raise Conflict(
            f"the database schema ({current}) is newer than this version of ModelTrain knows; "
            "upgrade ModelTrain or restore an older backup",
            code="schema_too_new",
        )
    snapshot: Path | None = None
    db_path = sqlite_path(url)
    new_sqlite = from_schema_file and current is None and db_path is not None
    if new_sqlite and _create_from_schema_file(engine, head):
        log.info("database schema created at %s", head)
        return None
    if db_path is not None and db_path.exists() and _has_tables(engine):
        snapshot = snapshot_sqlite(db_path, snapshot_dir or db_path.parent / "pre-migration", f"pre-{head}")
        log.info("snapshot before migration written to %s", snapshot)
    from alembic import command

    with engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    log.info("database schema upgraded from %s to %s", current or "empty", head)
    return snapshot


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    url = engine.url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def _has_tables(engine: Engine) -> bool:
    return bool(inspect(engine).get_table_names())


# --------------------------------------------------------------------------------------------------
# the schema of a new SQLite database, from its dump
# --------------------------------------------------------------------------------------------------


def _create_from_schema_file(engine: Engine, head: str) -> bool:
    """Create the head schema in an empty SQLite database from :data:`SQLITE_SCHEMA_FILE`, in one
    transaction. False (nothing done) if the file is missing or for another revision, or if the database
    is not empty once the write lock is held (another process got there first: Alembic then sees head)."""
    try:
        script = SQLITE_SCHEMA_FILE.read_text(encoding="utf-8")
    except OSError:
        return False
    first_line = script.split("\n", 1)[0]
    if first_line != _SCHEMA_REVISION_PREFIX + head:
        log.warning("%s is not at revision %s: migrating step by step", SQLITE_SCHEMA_FILE.name, head)
        return False
    with engine.begin() as conn:  # BEGIN IMMEDIATE: the write lock, held until the schema is complete
        if conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar():
            return False
        for statement in sql_statements(script):
            conn.exec_driver_sql(statement)
    return True


def sql_statements(script: str) -> list[str]:
    """The complete statements of an SQL script, as SQLite parses them (a trigger body's semicolons do
    not end its CREATE TRIGGER); ``--`` comment lines outside statements are dropped."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement at the end of the script: {pending[:80]!r}")
    return statements


def dump_sqlite_schema(db_path: Path) -> str:
    """The schema of a migrated SQLite file as a script for :func:`_create_from_schema_file`: its revision,
    every table (virtual tables included), index, view and trigger, then the revision row. SQLite's own
    tables, the shadow tables of full-text indexes and sqlite-vec's run-time tables are left out: their
    owners create them."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        shadow = {row[1] for row in conn.execute("PRAGMA table_list") if row[2] == "shadow"}
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master"
            " WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            " ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'view' THEN 2 ELSE 3 END, rowid"
        ).fetchall()
    finally:
        conn.close()
    lines = [
        _SCHEMA_REVISION_PREFIX + revision,
        "-- The ModelTrain schema a new SQLite database gets (server/db/migrate.py): a dump of a database",
        "-- the migrations have brought to this revision. Generated by `make regen-schema`; do not edit.",
    ]
    lines += [
        f"{sql};" for name, sql in rows if name not in shadow and not name.startswith(RUNTIME_VEC_PREFIX)
    ]
    lines.append(f"INSERT INTO alembic_version (version_num) VALUES ('{revision}');")
    return "\n".join(lines) + "\n"


def write_sqlite_schema(path: Path = SQLITE_SCHEMA_FILE) -> str:
    """Migrate a new temporary SQLite database with Alembic and write its dump to ``path``."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "schema.db"
        engine = create_db_engine(f"sqlite:///{db}")
        try:
            upgrade(engine, from_schema_file=False)
        finally:
            engine.dispose()
        dump = dump_sqlite_schema(db)
    path.write_text(dump, encoding="utf-8")
    return dump
