"""Engine and session factory. Every SQLite connection gets WAL, busy_timeout and foreign keys."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from server.db import catalog_generation, sqlite_vec

SQLITE_BUSY_TIMEOUT_MS = 10_000
#: Page cache of each pooled connection, in KiB (SQLite's default is 2,000). The pool keeps up to ten
#: connections, each filling its own cache as the database grows; the operating system caches the file
#: once for all of them, so a smaller private cache costs a system call on a miss, not a disk read.
SQLITE_CACHE_KIB = 1024


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # pysqlite's own transaction handling is disabled below; SQLAlchemy emits BEGIN itself.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        # After each checkpoint the WAL file is truncated back to this size (docs/security.md, E2).
        cursor.execute("PRAGMA journal_size_limit = 67108864")
    finally:
        cursor.close()


def sqlite_path(url: str) -> Path | None:
    """The file path of a SQLite URL, or ``None`` for other backends and in-memory databases."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def create_db_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        sqlite_vec.register()  # before the engine's first connection (docs/knowledge.md)
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=10,
            max_overflow=20,
            pool_timeout=30,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        if not sqlite_vec.available():
            event.listen(engine, "connect", sqlite_vec.drop_vec_triggers, once=True)

        @event.listens_for(engine, "connect")
        def _no_pysqlite_tx(dbapi_connection, _record):
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # IMMEDIATE (the default) takes the write lock up front, so a transaction that reads and
            # then writes waits on busy_timeout instead of failing with SQLITE_BUSY on a stale WAL
            # snapshot ("database is locked"). Read-only work uses DEFERRED (see read_only()).
            mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def read_only(engine: Engine) -> Engine:
    """The same engine (and pool) with DEFERRED transactions: for work that only reads."""
    return engine.execution_options(sqlite_begin="DEFERRED")


def create_session_factory(engine: Engine, *, readonly: bool = False) -> sessionmaker[Session]:
    factory = sessionmaker(bind=read_only(engine) if readonly else engine, expire_on_commit=False)
    catalog_generation.install(factory)
    return factory


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
