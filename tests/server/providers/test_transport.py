"""server/providers/transport.py: the aiohttp network layer under the providers' httpx client."""

from __future__ import annotations

import json
import socket

import anyio
import httpx
import pytest

from server.providers.registry import ProviderRegistry, new_http_client
from server.providers.transport import BlockedConnection, GuardedResolver
from tests.fakes import FakeOllama
from tests.server.providers.helpers import collect, request, text_of

pytestmark = pytest.mark.anyio


async def test_requests_through_the_registry_client_work(registry: ProviderRegistry) -> None:
    with FakeOllama(reply="one two three") as fake:
        adapter = registry.build_for("ollama", fake.url)
        assert text_of(await collect(adapter, request("llama3.2"))) == "one two three"
        assert [m.name for m in await adapter.list_models()]


class _StubResolver:
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[dict]:
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    "answer", [("169.254.169.254",), ("10.0.0.7", "169.254.169.254"), ("::ffff:169.254.169.254",)]
)
async def test_a_name_resolving_to_a_blocked_address_is_refused(answer: tuple[str, ...]) -> None:
    resolver = GuardedResolver()
    resolver._inner = _StubResolver(*answer)  # what the system resolver answered (e.g. after a DNS rebind)
    with pytest.raises(BlockedConnection, match="link-local or cloud-metadata"):
        await resolver.resolve("ollama.example.test", 11434)


async def test_a_name_resolving_to_allowed_addresses_passes() -> None:
    resolver = GuardedResolver()
    resolver._inner = _StubResolver("10.0.0.7", "fd00::7")
    assert [r["host"] for r in await resolver.resolve("ollama.example.test", 11434)] == [
        "10.0.0.7",
        "fd00::7",
    ]


async def test_the_resolver_guard_is_what_the_client_uses() -> None:
    client = new_http_client()
    try:
        transport = client._transport
        session = transport._session()
        assert isinstance(session.connector._resolver, GuardedResolver)
    finally:
        await client.aclose()


async def test_redirects_cookies_and_headers_pass_through_untouched() -> None:
    with FakeOllama() as fake:
        client = new_http_client()
        try:
            response = await client.get(f"{fake.url}/api/version", headers={"X-Probe": "1"})
            assert response.status_code == 200
            assert response.json()["version"]
            assert response.headers["content-type"].startswith("application/json")
            assert client.cookies.jar is not None and len(client.cookies.jar) == 0
        finally:
            await client.aclose()


async def test_refused_and_blocked_connections_are_httpx_connect_errors(closed_port: int) -> None:
    client = new_http_client()
    try:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{closed_port}/")
        with pytest.raises(httpx.ConnectError, match="blocked address"):
            await client.get("http://169.254.169.254/latest/meta-data")
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.get("ftp://127.0.0.1/")
    finally:
        await client.aclose()


async def test_a_body_read_to_its_end_returns_its_connection_and_an_abandoned_one_is_closed() -> None:
    with FakeOllama(reply=" ".join(["word"] * 50)) as fake:
        client = new_http_client()
        try:
            body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
            for _ in range(3):
                response = await client.post(f"{fake.url}/api/chat", json=body)
                assert response.status_code == 200
            async with client.stream("POST", f"{fake.url}/api/chat", json=body) as response:
                async for _chunk in response.aiter_bytes():
                    break  # abandoned after the first piece
            response = await client.post(f"{fake.url}/api/chat", json=body)
            assert response.status_code == 200
            chats = [
                peer
                for (_method, path), peer in zip(fake.requests, fake.peers, strict=True)
                if path == "/api/chat"
            ]
            assert len(set(chats[:3])) == 1  # complete bodies: one connection
            assert chats[4] != chats[3]  # the abandoned one was closed, not reused mid-body
        finally:
            await client.aclose()


async def test_a_fast_stream_of_small_pieces_is_read_in_paced_batches_and_arrives_whole() -> None:
    from server.providers.transport import PACE, PACE_BELOW

    # Tokens written about every 0.5 ms: faster than PACE, so unpaced reads would take one or two at a time.
    with FakeOllama(reply=" ".join(f"w{i}" for i in range(2000)), token_delay=0.0005) as fake:
        client = new_http_client()
        try:
            body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
            arrivals: list[tuple[float, int]] = []
            data = b""
            async with client.stream("POST", f"{fake.url}/api/chat", json=body) as response:
                async for chunk in response.aiter_bytes():
                    arrivals.append((anyio.current_time(), len(chunk)))
                    data += chunk
        finally:
            await client.aclose()
    lines = [json.loads(line) for line in data.splitlines()]
    assert "".join(line["message"]["content"] for line in lines if not line["done"]).split() == [
        f"w{i}" for i in range(2000)
    ]
    assert lines[-1]["done"] is True
    # After a small piece, the next read starts PACE after the read of that piece started, which was
    # after the piece before it had arrived: so two pieces after one piece, PACE has passed. (Once the
    # whole body is in, the last pieces are taken without waiting: the final three are left out.)
    body_part = arrivals[:-3]
    triples = zip(body_part, body_part[1:], body_part[2:], strict=False)  # a sliding window
    spans = [c[0] - a[0] for a, b, c in triples if b[1] < PACE_BELOW]
    assert all(span >= PACE * 0.95 for span in spans), spans
    # The same rule counted, which holds however busy the machine is (a busy reader finds large pieces
    # and reads less often): at most one small piece per PACE over the time the body took, plus the
    # large pieces and the last three.
    duration = arrivals[-1][0] - arrivals[0][0]
    small = sum(1 for _, size in body_part if size < PACE_BELOW)
    assert small <= duration / PACE + 1, (small, duration)
    assert len(arrivals) < len(lines)


async def test_a_streamed_upload_is_sent_chunked() -> None:
    with FakeOllama() as fake:
        client = new_http_client()
        try:

            async def parts():
                yield b'{"model": "llama3.2", '
                yield b'"messages": [{"role": "user", "content": "hi"}], "stream": false}'

            response = await client.post(f"{fake.url}/api/chat", content=parts())
            assert response.status_code == 200
            assert response.json()["done"] is True
        finally:
            await client.aclose()
