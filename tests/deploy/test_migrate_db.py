"""`modeltrain migrate-db --from sqlite:///... --to postgresql://...` on a populated installation."""

from __future__ import annotations

import socket
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text

import server.db.models  # noqa: F401
from server.app import create_app
from server.cli import main
from server.db.base import Base
from server.db.models import Conversation, Message, User
from server.db.session import create_db_engine
from server.settings import Settings
from tests.deploy.support import ADMIN_PASSWORD, INITIAL_PASSWORD, SECRET_KEY, json_headers, sign_in_admin


def _settings(tmp_path: Path, url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        secret_key=SECRET_KEY,
        initial_admin_password=INITIAL_PASSWORD,
        backup_schedule="off",
        _env_file=None,
    )


def _populate(tmp_path: Path) -> str:
    """A SQLite installation with users, sessions, a provider and a branching conversation."""
    url = f"sqlite:///{tmp_path / 'data' / 'modeltrain.db'}"
    app = create_app(_settings(tmp_path, url))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        token = sign_in_admin(client)
        for i in range(3):
            r = client.post(
                "/api/users",
                json={"email": f"u{i}@example.com", "password": f"user-pass-Long-{i}", "role": "user"},
                headers=json_headers(token=token),
            )
            assert r.status_code == 201, r.text
        factory = app.state.runtime.session_factory
        with factory() as session:
            admin = session.scalar(select(User).where(User.email == "admin@example.com"))
            conv = Conversation(id=uuid.uuid4(), user_id=admin.id, title="Über 中文 conversation")
            session.add(conv)
            session.flush()
            # A chain whose ids sort in the opposite order of the parent links (the copy must cope).
            parent = None
            base = datetime.now(timezone.utc)
            ids = sorted((uuid.uuid4() for _ in range(30)), reverse=True)
            for n, mid in enumerate(ids):
                session.add(
                    Message(
                        id=mid,
                        conversation_id=conv.id,
                        parent_id=parent,
                        role="user" if n % 2 == 0 else "assistant",
                        content=f"message {n} — ünïcødé ✓",
                        status="complete",
                        created_at=base + timedelta(seconds=n),
                        usage={"tokens": n},
                    )
                )
                session.flush()
                parent = mid
            session.commit()
    return url


def _counts(url: str) -> dict[str, int]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar()
                for t in Base.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def test_sqlite_to_postgresql_copies_everything(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture
) -> None:
    source = _populate(tmp_path)
    assert main(["migrate-db", "--from", source, "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "row counts verified" in out and "messages: 30 rows" in out
    want = _counts(source)
    assert want["users"] == 4 and want["messages"] == 30 and want["refresh_tokens"] >= 1
    assert _counts(pg_url) == want
    # Contents and links survive, and the app runs on the copy with the same accounts and passwords.
    pg = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    lite = create_engine(source)
    try:
        q = text("SELECT id, parent_id, content, usage FROM messages ORDER BY created_at")
        with pg.connect() as a, lite.connect() as b:
            pg_rows = [
                (str(r[0]).replace("-", ""), str(r[1]).replace("-", "") if r[1] else None, r[2])
                for r in a.execute(q)
            ]
            lite_rows = [
                (str(r[0]).replace("-", ""), str(r[1]).replace("-", "") if r[1] else None, r[2])
                for r in b.execute(q)
            ]
            assert pg_rows == lite_rows
            assert a.execute(text("SELECT title FROM conversations")).scalar() == "Über 中文 conversation"
    finally:
        pg.dispose()
        lite.dispose()
    app = create_app(_settings(tmp_path / "pg", pg_url))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        r = client.post("/api/auth/login", json={"email": "admin@example.com", "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        users = client.get("/api/users", headers=json_headers(token=r.json()["access_token"]))
        assert users.status_code == 200 and len(users.json()["items"]) == 4


def test_non_empty_target_is_refused_unless_forced(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture
) -> None:
    source = _populate(tmp_path)
    assert main(["migrate-db", "--from", source, "--to", pg_url]) == 0
    capsys.readouterr()
    assert main(["migrate-db", "--from", source, "--to", pg_url]) == 1
    err = capsys.readouterr().err
    assert "already holds data" in err and "--force" in err and "Traceback" not in err
    assert main(["migrate-db", "--from", source, "--to", pg_url, "--force"]) == 0
    assert "deleted (--force)" in capsys.readouterr().out
    assert _counts(pg_url) == _counts(source)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_clear_errors(tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture) -> None:
    cases = [
        (
            ["--from", f"sqlite:///{tmp_path / 'missing.db'}", "--to", pg_url],
            "there is no SQLite database at",
        ),
        (["--from", "mysql://x@h/db", "--to", pg_url], "--from must be a sqlite:///PATH or postgresql://"),
        (["--from", pg_url, "--to", pg_url], "name the same database"),
        (["--from", pg_url, "--to", f"sqlite:///{tmp_path / 'out.db'}"], "is not a ModelTrain database"),
        (["--to", pg_url], "give both --from URL and --to URL"),
    ]
    source = _populate(tmp_path)
    cases.append(
        (
            ["--from", source, "--to", f"postgresql://u:hunter2secret@127.0.0.1:{_closed_port()}/x"],
            "cannot use the target database postgresql://u:***@127.0.0.1",
        )
    )
    for args, expected in cases:
        code = main(["migrate-db", *args])
        err = capsys.readouterr().err
        assert code in (1, 2), (args, err)
        assert expected in err, (args, err)
        assert "Traceback" not in err and "hunter2secret" not in err
