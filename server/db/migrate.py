"""Schema migrations: upgrade to head, with a SQLite snapshot taken first so a failed upgrade loses nothing."""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config

from server.db.session import read_only, sqlite_path

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def include_object(obj, name, type_, reflected, compare_to) -> bool:  # noqa: ANN001
    """Leave full-text-search objects out of autogenerate: SQLite's FTS5 virtual tables (and their shadow
    tables) and PostgreSQL's ``*_fts`` expression indexes (revision 0002)."""
    return not (type_ in ("table", "index") and name and "_fts" in name)


#: The newest revision in server/migrations/versions. Kept here so a start-up on an up-to-date
#: database never imports Alembic (~0.3 s); tests/server/db/test_migrations.py checks it matches.
SCHEMA_HEAD = "0002"


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


def snapshot_sqlite(db_path: Path, dest_dir: Path, label: str) -> Path:
    """Copy a live SQLite database consistently with the online backup API."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    dest = dest_dir / f"{db_path.stem}-{label}-{stamp}.db"
    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()
    dest.chmod(0o600)
    return dest


def upgrade(engine: Engine, snapshot_dir: Path | None = None) -> Path | None:
    """Upgrade the database behind ``engine`` to head. Returns the pre-upgrade snapshot, if one was taken.

    An existing SQLite file that is behind head is snapshotted first (kept in ``snapshot_dir``).
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
