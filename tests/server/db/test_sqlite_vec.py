"""sqlite-vec is registered for every SQLite connection of the process (SQLite's auto-extension, no
``enable_load_extension``), once, from the first SQLite engine; where it cannot be, a warning and the
fallback (``available()`` false)."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from server.db import sqlite_vec
from server.db.session import create_db_engine

pytestmark = pytest.mark.sqlite_only


def test_every_sqlite_connection_has_sqlite_vec_once_an_engine_exists(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'vec.db'}")
    try:
        assert sqlite_vec.available()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT vec_version()").scalar() == "v0.1.9"
    finally:
        engine.dispose()
    # Any connection opened afterwards, not only the engine's: the registration is per process.
    conn = sqlite3.connect(":memory:")
    try:
        assert conn.execute("SELECT vec_version()").fetchone()[0] == "v0.1.9"
    finally:
        conn.close()


def test_registration_is_idempotent_and_thread_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(sqlite_vec, "_registered", None)
    monkeypatch.setattr(sqlite_vec, "_try_register", lambda: calls.append(1) or (True, "test"))
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(sqlite_vec.register())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 8 and calls == [1]


def test_where_it_cannot_be_registered_it_says_so_once_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite_vec, "_registered", None)
    monkeypatch.setattr(sqlite_vec, "_try_register", lambda: (False, "linked in statically"))
    with caplog.at_level(logging.WARNING, logger="server.db.sqlite_vec"):
        assert sqlite_vec.register() is False
        assert sqlite_vec.register() is False
    assert not sqlite_vec.available()
    warnings = [r.getMessage() for r in caplog.records if r.name == "server.db.sqlite_vec"]
    assert len(warnings) == 1 and "linked in statically" in warnings[0]


def test_the_library_found_must_be_the_one_python_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another SQLite (a different version) is not used; with none found, no registration."""
    monkeypatch.setattr(sqlite_vec, "_vec_works", lambda: None)
    monkeypatch.setattr(sqlite3, "sqlite_version", "0.0.0")
    ok, why = sqlite_vec._try_register()
    assert ok is False and "could not be reached" in why
