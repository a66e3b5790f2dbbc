"""Start-up work shared by the CLI, the app lifespan and the desktop host: schema and first admin."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from server.db import migrate
from server.db.session import session_scope
from server.security.secret_store import ensure_private_dir
from server.services.providers import ensure_default_provider
from server.services.users import InitialAdmin, ensure_initial_admin
from server.settings import Settings

log = logging.getLogger(__name__)


def prepare_database(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Session]
) -> InitialAdmin | None:
    """Upgrade the schema (snapshotting an existing SQLite file first) and create the first admin."""
    ensure_private_dir(settings.data_dir)
    private_sqlite_files(engine)
    with _startup_lock(engine):
        if settings.migrate_on_start:
            migrate.upgrade(engine, settings.data_dir / "backups" / "pre-migration")
        with session_scope(session_factory) as session:
            ensure_default_provider(session, settings)
            return ensure_initial_admin(session, settings)


def private_sqlite_files(engine: Engine) -> None:
    """A SQLite database, its WAL and shared-memory files are 0600 (docs/security.md, A6): a new file is
    created so before SQLite opens it (SQLite gives the -wal and -shm files the database file's mode), an
    existing one is tightened."""
    name = engine.url.database if engine.dialect.name == "sqlite" else None
    if not name or name == ":memory:" or name.startswith("file:") or os.name != "posix":
        return
    db = Path(name)
    with contextlib.suppress(FileExistsError, FileNotFoundError):  # no folder: SQLite reports it
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for path in (db, *(db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal"))):
        with contextlib.suppress(OSError):
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)


#: pg_advisory_lock key ("MTRN") held while one instance migrates and seeds a shared PostgreSQL database.
_PG_STARTUP_LOCK = 0x4D54524E


@contextmanager
def _startup_lock(engine: Engine) -> Iterator[None]:
    """Several instances starting at once on one PostgreSQL database take turns, so
    only the first migrates and creates the first admin. SQLite serialises writers by itself."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_STARTUP_LOCK})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_STARTUP_LOCK})
            conn.commit()
