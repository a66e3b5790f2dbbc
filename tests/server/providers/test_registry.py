"""server/providers/registry.py: the shared client's connections send a request in one write."""

from __future__ import annotations

from typing import Any

import httpcore
import pytest

from server.providers.registry import ProviderRegistry, _BatchedWrites
from tests.fakes import FakeOllama
from tests.server.providers.helpers import collect, request, text_of

pytestmark = pytest.mark.anyio


class RecordingStream(httpcore.AsyncNetworkStream):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.events.append(("write", buffer))

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.events.append(("read", max_bytes))
        return b"HTTP/1.1 200 OK\r\n\r\n"

    async def aclose(self) -> None:
        self.events.append(("close", None))

    def get_extra_info(self, info: str) -> Any:
        return {"is_readable": False}.get(info)


async def test_a_request_head_and_body_leave_in_one_write_before_the_answer_is_read() -> None:
    inner = RecordingStream()
    stream = _BatchedWrites(inner)
    await stream.write(b"POST /api/chat HTTP/1.1\r\n\r\n")
    await stream.write(b"")
    await stream.write(b'{"model": "m"}')
    assert inner.events == []
    assert await stream.read(1024) == b"HTTP/1.1 200 OK\r\n\r\n"
    assert inner.events == [("write", b'POST /api/chat HTTP/1.1\r\n\r\n{"model": "m"}'), ("read", 1024)]
    assert stream.get_extra_info("is_readable") is False
    await stream.aclose()
    assert inner.events[-1] == ("close", None)


async def test_a_large_body_is_streamed_not_collected() -> None:
    inner = RecordingStream()
    stream = _BatchedWrites(inner)
    await stream.write(b"h" * 100)
    await stream.write(b"b" * 70_000)
    assert [kind for kind, _ in inner.events] == ["write"]  # over 64 KiB: written at once
    await stream.write(b"tail")
    await stream.read(10)
    assert inner.events[1] == ("write", b"tail")


async def test_requests_through_the_registry_client_still_work(registry: ProviderRegistry) -> None:
    with FakeOllama(reply="one two three") as fake:
        adapter = registry.build_for("ollama", fake.url)
        assert text_of(await collect(adapter, request("llama3.2"))) == "one two three"
        assert [m.name for m in await adapter.list_models()]
