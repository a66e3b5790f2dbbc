"""SIGTERM with ten replies streaming (docs/security.md, F6): ``modeltrain serve`` drains them within
10 s, each partial answer is saved as ``stopped``, the WAL is checkpointed into the database file, the
port is free at once and the next start finds nothing to repair."""

from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
import time
import uuid
from pathlib import Path

import httpx

from tests.deploy.support import first_model_id, sign_in_admin, start_serve, wait_for
from tests.deploy.test_crash_recovery import LONG_REPLY, reply, rows, streaming
from tests.fakes.fake_ollama import FakeOllama

STREAMS = 10


def test_sigterm_with_ten_streams_drains_them_saves_the_partials_and_frees_the_port(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    db = data_dir / "modeltrain.db"
    with FakeOllama(token_delay=0.05, reply=LONG_REPLY) as fake:
        env = {
            "MODELTRAIN_OLLAMA_URL": fake.url,
            "MODELTRAIN_CHAT_PERSIST_INTERVAL": "0.1",
            "MODELTRAIN_CHAT_TITLE_GENERATION": "false",
            "MODELTRAIN_MAX_STREAMS_PER_USER": str(STREAMS),
        }
        server = start_serve(data_dir, None, tmp_path / "serve.log", **env)
        try:
            port = int(server.url.rsplit(":", 1)[1])
            with contextlib.ExitStack() as streams, httpx.Client(base_url=server.url, timeout=30) as client:
                token = sign_in_admin(client)
                model = first_model_id(client, token)
                ids = []
                for i in range(STREAMS):
                    # each stream on its own connection, as ten browser tabs
                    tab = streams.enter_context(httpx.Client(base_url=server.url, timeout=30))
                    ids.append(streams.enter_context(streaming(tab, token, model, f"tab {i}")))
                assert wait_for(lambda: all(len(reply(db, mid)[1]) > 20 for mid in ids), 30)
                assert fake.active_streams == STREAMS
                started = time.monotonic()
                server.popen.terminate()
                code = server.popen.wait(15)
                drained = time.monotonic() - started
        finally:
            server.stop()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why
        assert code in (0, -signal.SIGTERM), server.output()[-2000:]
        assert "timeout graceful shutdown exceeded" not in server.output()
        assert drained < 10, drained
        assert fake.active_streams == 0  # every upstream request was closed, not left to run
    for mid in ids:
        status, content, _ = reply(db, mid)
        assert status == "stopped", (mid, status)
        assert content.startswith("token0 token1"), content[:80]
    # The WAL was checkpointed into the database file: nothing is left for the next open to replay.
    wal = data_dir / "modeltrain.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    with contextlib.closing(socket.socket()) as sock:  # the port is free at once for the next server
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as every server binds (TIME_WAIT)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    again = start_serve(data_dir, None, tmp_path / "again.log")
    try:
        assert not rows(db, "SELECT id FROM messages WHERE status = 'streaming'")
        assert rows(db, "PRAGMA integrity_check") == [("ok",)]
        assert "interrupted" not in again.output()
    finally:
        again.stop()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        stored = {
            uuid.UUID(hex=r[0]) for r in conn.execute("SELECT id FROM messages WHERE status = 'stopped'")
        }
    assert stored == {uuid.UUID(mid) for mid in ids}
