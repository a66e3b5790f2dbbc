"""EmbeddedServer: start on a free loopback port, clear start-up errors, bounded stop, WAL checkpoint."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from starlette.responses import StreamingResponse

from server.app import create_app
from server.embedded import EmbeddedServer, EmbeddedServerError
from server.settings import Settings


def _server_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("modeltrain-server")]


def test_start_serves_on_a_free_loopback_port_and_stops(make_settings: Callable[..., Settings]) -> None:
    server = EmbeddedServer(make_settings())
    url = server.start(timeout=60)
    try:
        assert url.startswith("http://127.0.0.1:") and url == server.url
        assert server.app is server.app  # the app object itself, not an import string
        assert httpx.get(url + "/api/health").json() == {"status": "ok"}
        assert httpx.get(url + "/api/health/ready").status_code == 200
        # By default nothing listens beyond loopback (docs/security.md, A5).
        import psutil

        listening = [
            c.laddr for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
        ]
        assert listening and all(addr.ip in ("127.0.0.1", "::1") for addr in listening)
    finally:
        server.stop()
    assert not server.running
    assert _server_threads() == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/api/health")


def test_port_in_use_is_a_clear_error(make_settings: Callable[..., Settings]) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(EmbeddedServerError) as info:
            EmbeddedServer(make_settings(), port=port).start(timeout=30)
    finally:
        taken.close()
    assert info.value.kind == "port_in_use"
    assert str(port) in info.value.message and "\n" not in info.value.message
    assert _server_threads() == []


def test_locked_database_is_a_clear_error(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """Another program holds the SQLite write lock: start-up fails (after busy_timeout) with kind
    ``database_locked`` instead of hanging or crashing."""
    path = tmp_path / "locked.db"
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("PRAGMA journal_mode=WAL")
    locker.execute("CREATE TABLE other_program (x)")
    locker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(EmbeddedServerError) as info:
            EmbeddedServer(make_settings(database_url=f"sqlite:///{path}")).start(timeout=60)
    finally:
        locker.close()
    assert info.value.kind == "database_locked"
    assert "locked" in info.value.message and "\n" not in info.value.message
    assert _server_threads() == []


def test_stop_is_bounded_with_an_open_stream(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(shutdown_grace_seconds=0.5)
    app = create_app(settings)
    opened = threading.Event()

    async def endless():
        while True:
            yield b"data: tick\n\n"
            await asyncio.sleep(0.05)

    app.add_api_route(
        "/api/test-stream", lambda: StreamingResponse(endless(), media_type="text/event-stream")
    )
    server = EmbeddedServer(settings, app=app)
    url = server.start(timeout=60)
    received: list[bytes] = []

    def reader() -> None:
        try:
            with httpx.stream("GET", url + "/api/test-stream", timeout=30) as response:
                for chunk in response.iter_raw():
                    received.append(chunk)
                    opened.set()
        except httpx.HTTPError:
            pass

    client = threading.Thread(target=reader, daemon=True)
    client.start()
    assert opened.wait(10)
    started = time.monotonic()
    server.stop(timeout=5)
    elapsed = time.monotonic() - started
    client.join(5)
    assert elapsed < 5
    assert not client.is_alive(), "the stream was ended by the shutdown"
    assert _server_threads() == []


def test_stop_checkpoints_the_wal(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    server = EmbeddedServer(settings)
    url = server.start(timeout=60)
    assert (
        httpx.post(
            url + "/api/auth/login", json={"email": "admin@example.com", "password": "nope-nope"}
        ).status_code
        == 401
    )
    server.stop()
    wal = settings.data_dir / "modeltrain.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_desktop_token_exists_only_in_desktop_mode(make_settings: Callable[..., Settings]) -> None:
    assert EmbeddedServer(make_settings()).desktop_token is None
    token = EmbeddedServer(make_settings(desktop_mode=True)).desktop_token
    assert token is not None and len(token) >= 43
    assert token != EmbeddedServer(make_settings(desktop_mode=True)).desktop_token
