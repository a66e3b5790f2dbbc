"""server/runtime.py: where short reads run."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.server.conftest import bearer


def test_short_reads_run_on_the_loop_only_on_sqlite_with_a_free_pooled_connection(
    client: TestClient, app: FastAPI, admin_token: str
) -> None:
    runtime = app.state.runtime
    if runtime.engine.dialect.name != "sqlite":  # the PostgreSQL run: always a worker thread
        assert runtime.can_read_inline() is False
        assert client.get("/api/users/me", headers=bearer(admin_token)).status_code == 200
        return
    assert runtime.can_read_inline() is True
    held = [runtime.engine.connect() for _ in range(runtime.engine.pool.size())]
    try:
        # Every pooled connection is busy: waiting for one would stall the event loop, so the
        # sign-in read goes to a worker thread (which may open an overflow connection) and still works.
        assert runtime.can_read_inline() is False
        assert client.get("/api/users/me", headers=bearer(admin_token)).status_code == 200
    finally:
        for connection in held:
            connection.close()
    assert runtime.can_read_inline() is True
