"""``kill -9`` during streaming, then a restart: no reply is left ``streaming`` (docs/security.md, E5).

Real ``python -m server serve`` processes: instance A is killed mid-reply and restarted again and again;
right after each start (no staleness waited for) its reply of the run before is ``interrupted`` with its
partial text kept, while instance B, a second live process on the same data directory and SQLite file
(same host and data directory, so the same instance id), keeps its own reply streaming all along.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.deploy.support import (
    Proc,
    first_model_id,
    iter_sse,
    json_headers,
    sign_in_admin,
    start_serve,
    wait_for,
)
from tests.fakes.fake_ollama import FakeOllama

CYCLES = 5
#: Outlasts the whole test at 0.05 s per token.
LONG_REPLY = " ".join(f"token{i}" for i in range(4000))


def rows(db: Path, sql: str, *args: object) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return conn.execute(sql, args).fetchall()


def reply(db: Path, mid: str) -> tuple[str, str, str | None]:
    [(status, content, error)] = rows(
        db, "SELECT status, content, error FROM messages WHERE id = ?", uuid.UUID(mid).hex
    )
    return status, content, error


@contextlib.contextmanager
def streaming(client: httpx.Client, token: str, model: str, text: str) -> Iterator[str]:
    """A reply streaming while the block runs (the response is left unread): its message id."""
    body = {"model": model, "content": text}
    with client.stream("POST", "/api/chat", json=body, headers=json_headers(token=token)) as r:
        assert r.status_code == 200, r.read()
        events = iter_sse(r)  # kept referenced: closing it would close the connection (a stop)
        event, data = next(events)
        assert event == "meta", (event, data)
        yield data["assistant_message_id"]
        events.close()


def test_kill_9_during_streaming_leaves_no_reply_streaming_after_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    db = data_dir / "modeltrain.db"
    procs: list[Proc] = []
    with FakeOllama(token_delay=0.05, reply=LONG_REPLY) as fake:
        env = {
            "MODELTRAIN_OLLAMA_URL": fake.url,
            "MODELTRAIN_CHAT_PERSIST_INTERVAL": "0.1",
            "MODELTRAIN_CHAT_TITLE_GENERATION": "false",
            "MODELTRAIN_LOG_ROTATION": "external",  # two processes write the same log files
            # a killed process's stream slots are freed when their reservations expire, not at once
            "MODELTRAIN_MAX_STREAMS_PER_USER": str(CYCLES + 2),
        }
        try:
            b = start_serve(data_dir, None, tmp_path / "b.log", MODELTRAIN_INSTANCE_NAME="b", **env)
            procs.append(b)
            with httpx.Client(base_url=b.url, timeout=30) as cb:
                token = sign_in_admin(cb)
                model = first_model_id(cb, token)
                with streaming(cb, token, model, "stay alive") as b_reply:
                    a_reply = ""
                    for cycle in range(CYCLES):
                        a = start_serve(data_dir, None, tmp_path / f"a{cycle}.log", **env)
                        procs.append(a)
                        if cycle:  # the start just now marked the previous run's reply at once
                            status, content, error = reply(db, a_reply)
                            assert status == "error" and '"interrupted"' in (error or ""), (status, error)
                            assert content.startswith("token0 token1"), content[:80]
                        assert rows(db, "SELECT id FROM messages WHERE status = 'streaming'") == [
                            (uuid.UUID(b_reply).hex,)
                        ]
                        with (
                            httpx.Client(base_url=a.url, timeout=30) as ca,
                            streaming(ca, token, model, f"cycle {cycle}") as a_reply,
                        ):
                            # some of the reply is saved, then the process dies mid-stream
                            wait_for(lambda: len(reply(db, a_reply)[1]) > 20, 20)
                            a.popen.kill()
                            a.popen.wait(10)
                        assert reply(db, a_reply)[0] == "streaming"
                    a = start_serve(data_dir, None, tmp_path / "a-last.log", **env)
                    procs.append(a)
                    assert reply(db, a_reply)[0] == "error"
                    assert reply(db, b_reply)[0] == "streaming"  # B's reply never taken for a crash
                # closing B's stream stops it: saved as stopped by its own process
                wait_for(lambda: reply(db, b_reply)[0] == "stopped", 20)
            assert not rows(db, "SELECT id FROM messages WHERE status = 'streaming'")
            assert rows(db, "PRAGMA integrity_check") == [("ok",)]
        finally:
            for proc in procs:
                proc.stop()
