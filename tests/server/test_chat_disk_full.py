"""A full disk during chat (docs/security.md, E6): the data directory on a small tmpfs (we run as root, in
CI too) filled while a reply streams and while a prompt is saved. The user gets a clear ``disk_full``
error, a prompt is refused as a whole, nothing is corrupt, and the same app serves normally once there is
room again, without a restart."""

from __future__ import annotations

import errno
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from server.app import create_app
from server.db.models import Conversation, Message
from server.services import chat as chat_service
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.server.chat_support import install_fake_model, parse_sse
from tests.server.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, BASE_URL, INITIAL_PASSWORD, bearer, login
from tests.server.ops_support import TmpfsMount, integrity

pytestmark = pytest.mark.sqlite_only  # the database file itself lives on the small disk

LONG_REPLY = " ".join(f"word{i}" for i in range(300))


@pytest.fixture
def small_data_disk(tmp_path: Path) -> Iterator[TmpfsMount]:
    mount = TmpfsMount(tmp_path / "data", "24m")
    with mount:
        yield mount


def fill(folder: Path) -> Path:
    """Fill the disk holding ``folder`` to the last byte; returns the filler file (delete it for room)."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    f.write(chunk[:size])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


def counts(app) -> tuple[int, int]:
    with app.state.runtime.session_factory() as s:
        return s.scalar(select(func.count()).select_from(Conversation)), s.scalar(
            select(func.count()).select_from(Message)
        )


def test_a_full_disk_during_chat_is_a_clear_error_and_recovers_without_restart(
    make_settings: Callable[..., Settings], small_data_disk: TmpfsMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = small_data_disk.path
    db = data / "modeltrain.db"
    settings = make_settings(
        data_dir=data,
        database_url=f"sqlite:///{db}",
        chat_persist_interval=0.05,
        chat_title_generation=False,
        backup_schedule="off",
    )
    with FakeOllama(token_delay=0.01, reply=LONG_REPLY) as fake:
        model = install_fake_model(monkeypatch, fake)
        app = create_app(settings)
        with TestClient(app, base_url=BASE_URL) as c:
            token = login(c, ADMIN_EMAIL, INITIAL_PASSWORD)
            r = c.post(
                "/api/auth/password",
                json={"current_password": INITIAL_PASSWORD, "new_password": ADMIN_PASSWORD},
                headers=bearer(token),
            )
            token = r.json()["access_token"]

            # 1. the disk fills while a reply streams: the reply ends with a disk_full error event
            filler: Path | None = None
            body = {"model": model.id, "content": "a long answer please"}
            with c.stream("POST", "/api/chat", json=body, headers=bearer(token)) as r:
                assert r.status_code == 200
                text = ""
                for chunk in r.iter_text():
                    text += chunk
                    if filler is None and "event: delta" in text:
                        filler = fill(data)
            events, _ = parse_sse(text)
            assert events[-1].event == "error", [e.event for e in events]
            assert events[-1].data["code"] == "disk_full" and "full" in events[-1].data["message"]
            streamed = uuid.UUID(events[0].data["assistant_message_id"])

            # 2. a prompt while the disk is full: refused as a whole, nothing stored
            before = counts(app)
            r = c.post(
                "/api/chat", json={"model": model.id, "content": "will not fit"}, headers=bearer(token)
            )
            assert r.status_code == 507, r.text
            assert r.json()["code"] == "disk_full" and "full" in r.json()["message"]
            assert counts(app) == before
            assert c.get("/api/users/me", headers=bearer(token)).status_code == 200  # reading still works

            # 3. room again: the same app chats normally, and the reply the disk cut off is swept with its
            #    saved text (as an interrupted one, once its row has gone stale)
            assert filler is not None
            filler.unlink()
            r = c.post("/api/chat", json={"model": model.id, "content": "and now?"}, headers=bearer(token))
            assert r.status_code == 200, r.text
            events, _ = parse_sse(r.text)
            assert events[-1].event == "done" and events[-1].data["message"]["status"] == "complete"
            later = datetime.now(timezone.utc) + timedelta(seconds=chat_service.ORPHAN_AFTER_SECONDS + 1)
            assert chat_service.recover_interrupted(app.state.runtime, now=later) == 1
            with app.state.runtime.session_factory() as s:
                row = s.get(Message, streamed)
                assert row is not None and row.status == "error" and row.error["code"] == "interrupted"
    assert integrity(db) == "ok"
