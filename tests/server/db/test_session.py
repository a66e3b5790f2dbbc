"""The SQLite engine's WAL stays bounded (docs/security.md, E2): a reader holding one snapshot while
others write lets the WAL grow past its cap (nothing can be checkpointed behind the reader), and once the
reader ends, the next checkpoints shrink the file back under ``journal_size_limit``."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from server.db.session import create_db_engine, read_only

CAP = 64 * 1024 * 1024  # PRAGMA journal_size_limit of every connection
MIB = 1024 * 1024


def test_the_wal_grows_behind_a_long_reader_and_shrinks_under_its_cap_after_it(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    wal = tmp_path / "wal.db-wal"
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)"))
            assert conn.execute(text("PRAGMA journal_size_limit")).scalar() == CAP
        reader = read_only(engine).connect()
        try:
            reader.begin()
            assert reader.execute(text("SELECT count(*) FROM blobs")).scalar() == 0  # the snapshot is held
            for _ in range(72):  # 72 MiB written in commits of 1 MiB while the reader holds its snapshot
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO blobs (data) VALUES (randomblob(:n))"), {"n": MIB})
            assert wal.stat().st_size > CAP  # nothing could be checkpointed behind the reader
            assert reader.execute(text("SELECT count(*) FROM blobs")).scalar() == 0  # still its snapshot
        finally:
            reader.close()
        # The reader is gone: the next commits' automatic checkpoints copy the WAL back into the database
        # and restart it, truncating the file to the cap.
        for _ in range(3):
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM blobs WHERE id = (SELECT min(id) FROM blobs)"))
        assert wal.stat().st_size <= CAP
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            assert conn.execute(text("SELECT count(*) FROM blobs")).scalar() == 69
    finally:
        engine.dispose()
