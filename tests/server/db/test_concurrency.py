"""Concurrent writers never surface "database is locked" (docs/security.md, E1, SQLite part): twenty
writers and fifty readers, with an online backup and a start-up migration check running among them."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from sqlalchemy import func, select

from server.db import migrate
from server.db.models import Conversation, Message, User
from server.db.session import create_db_engine, create_session_factory, session_scope
from server.services.backups.checks import sqlite_snapshot


def test_twenty_writers_and_readers_without_lock_errors(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate.upgrade(engine)
    factory = create_session_factory(engine)
    with session_scope(factory) as s:
        user = User(email="c@example.com", password_hash="x")
        s.add(user)
        s.flush()
        conv = Conversation(user_id=user.id, title="t")
        s.add(conv)
        s.flush()
        conv_id = conv.id
    errors: list[BaseException] = []
    start = threading.Barrier(72)

    def writer() -> None:
        try:
            start.wait()
            for i in range(20):
                with session_scope(factory) as s:
                    # read-then-write in one transaction: the pattern that fails in deferred mode
                    s.scalar(select(func.count()).select_from(Message))
                    s.add(Message(conversation_id=conv_id, role="user", content=f"m{i}-{uuid.uuid4()}"))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            start.wait()
            for _ in range(40):
                with factory() as s:
                    s.scalar(select(func.count()).select_from(Message))
        except BaseException as exc:
            errors.append(exc)

    snapshots: list[int] = []

    def backup() -> None:  # the backup service's online snapshot, taken while the writers write
        try:
            start.wait()
            for i in range(3):
                copy = tmp_path / f"snapshot-{i}.db"
                sqlite_snapshot(tmp_path / "c.db", copy)
                check = create_db_engine(f"sqlite:///{copy}")
                with check.connect() as conn:
                    assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
                    snapshots.append(conn.scalar(select(func.count()).select_from(Message.__table__)) or 0)
                check.dispose()
        except BaseException as exc:
            errors.append(exc)

    def starting_instance() -> None:  # another instance starting: its migration check at head
        try:
            start.wait()
            migrate.upgrade(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = (
        [threading.Thread(target=writer) for _ in range(20)]
        + [threading.Thread(target=reader) for _ in range(50)]
        + [threading.Thread(target=backup), threading.Thread(target=starting_instance)]
    )
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Message)) == 400
    # Each snapshot is a consistent state between commits: whole commits only, in order.
    assert len(snapshots) == 3 and snapshots == sorted(snapshots) and all(0 <= n <= 400 for n in snapshots)
    engine.dispose()
