"""Adapter tests run on asyncio through anyio's pytest plugin, against the real fakes in tests/fakes."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from server.providers.registry import ProviderRegistry


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def registry() -> AsyncIterator[ProviderRegistry]:
    reg = ProviderRegistry()
    try:
        yield reg
    finally:
        await reg.aclose()


@pytest.fixture
def unresponsive_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a TCP connect to it hangs (no server answers)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.socket()
    filler.connect(("127.0.0.1", port))
    try:
        yield port
    finally:
        filler.close()
        server.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port
