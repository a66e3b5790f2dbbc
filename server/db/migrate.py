"""Schema migrations: upgrade to head, with a SQLite snapshot taken first so a failed upgrade loses nothing."""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from server.db.session import sqlite_path

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def include_object(obj, name, type_, reflected, compare_to) -> bool:  # noqa: ANN001
    """Leave full-text-search tables (virtual tables and their shadow tables) out of autogenerate."""
    return not (type_ == "table" and name and "_fts" in name)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def known_revisions() -> set[str]:
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
    with engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    log.info("database schema upgraded from %s to %s", current or "empty", head)
    return snapshot


def downgrade(engine: Engine, revision: str) -> None:
    url = engine.url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def _has_tables(engine: Engine) -> bool:
    return bool(inspect(engine).get_table_names())
