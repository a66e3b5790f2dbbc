"""The listener building blocks: socket binding, URL hosts and the per-listener request tag."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest
from starlette.types import Receive, Scope, Send

from server.listener import ListenerApp, bind_listener, host_for_url, uvicorn_config
from server.security import desktop_token
from server.settings import Settings


def test_bind_listener_listens_on_a_free_port() -> None:
    sock = bind_listener("127.0.0.1", 0)
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1"
        assert port > 0
        assert not sock.get_inheritable()
        with socket.create_connection((host, port), timeout=5):
            pass
    finally:
        sock.close()


def test_bind_listener_closes_the_socket_when_the_port_is_taken() -> None:
    taken = bind_listener("127.0.0.1", 0)
    try:
        with pytest.raises(OSError) as info:  # noqa: PT011 - the errno is checked below
            bind_listener("127.0.0.1", taken.getsockname()[1])
        assert info.value.errno == errno.EADDRINUSE
    finally:
        taken.close()


def test_ipv6_hosts_are_bracketed_in_urls() -> None:
    assert host_for_url("127.0.0.1") == "127.0.0.1"
    assert host_for_url("::1") == "[::1]"


def test_requests_are_tagged_with_their_listener_and_lifespan_errors_kept() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("start-up failed")
        seen.append(scope)

    async def receive() -> dict:
        return {}

    async def send(_message: dict) -> None:
        return None

    tagged = ListenerApp(app, desktop_token.LAN_LISTENER)
    asyncio.run(tagged({"type": "http"}, receive, send))
    assert seen[0][desktop_token.LISTENER_SCOPE_KEY] == "lan"
    lifespan: Scope = {"type": "lifespan"}
    with pytest.raises(RuntimeError):
        asyncio.run(tagged(lifespan, receive, send))
    assert isinstance(tagged.lifespan_error, RuntimeError)
    assert desktop_token.LISTENER_SCOPE_KEY not in lifespan


def test_idle_connections_outlive_the_clients_that_reuse_them() -> None:
    """A server that closes an idle connection at the moment a client reuses it makes that request fail
    (httpx: ReadError; nginx: 502). So the keep-alive timeout is the setting, and its default outlasts
    nginx's upstream keepalive_timeout (60 s) and httpx's pool expiry (5 s)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    assert uvicorn_config(app, Settings(keep_alive_seconds=42), lifespan="off").timeout_keep_alive == 42
    assert uvicorn_config(app, Settings(), lifespan="off").timeout_keep_alive > 60
