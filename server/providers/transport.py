"""The network layer under the providers' ``httpx.AsyncClient``: requests are carried by aiohttp.

Why not httpx's own transport: it parses HTTP in pure Python (h11), one parser event per chunk. Ollama
sends every token as its own chunk, so a fast model costs about 8 µs of parsing per token on top of
the work on the token itself. aiohttp parses in C (llhttp) and hands over everything that has arrived in
one piece, so a busy server reads many tokens per wake-up. The adapters keep the httpx API (requests,
responses, errors, ``MockTransport`` in tests); only this module knows aiohttp.

What it guarantees, as the httpx transport did:

* every new connection goes to an address :mod:`server.providers.netpolicy` allows — host names are
  resolved here and every address is checked, so a name that later resolves to a metadata address is
  still refused (DNS rebinding); literal addresses are checked before anything is sent;
* no redirects followed, no cookies kept, no proxy or ``.netrc`` from the environment, no body decoding
  (httpx decodes);
* connections are pooled (``limits``) and kept alive; a body read to its end gives its connection back.

aiohttp sessions belong to an event loop, so one is kept per loop (a server has one loop; tests open
several).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from server.providers.netpolicy import blocked_reason, literal_address


class BlockedConnection(Exception):
    """A destination :mod:`server.providers.netpolicy` refuses (raised from inside aiohttp)."""


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver, then refuses the whole answer if any address is blocked."""

    def __init__(self) -> None:
        self._inner: ThreadedResolver | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = ThreadedResolver()
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = literal_address(result["host"])
            reason = blocked_reason(address) if address is not None else None
            if reason:
                raise BlockedConnection(f"blocked address: the host resolves to {reason}")
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def _mapped(exc: BaseException) -> Exception:
    """An aiohttp failure as the httpx error the adapters understand."""
    if isinstance(exc, BlockedConnection):
        return httpx.ConnectError(str(exc))
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout("connecting to the upstream timed out")
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout("the upstream did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return httpx.ConnectError(f"cannot resolve {exc.host}: {exc.os_error.strerror or exc.os_error}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(f"cannot connect to {exc.host}:{exc.port}")
    if isinstance(exc, (aiohttp.NonHttpUrlClientError, aiohttp.InvalidURL)):
        return httpx.UnsupportedProtocol(str(exc))
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(f"the upstream sent an invalid HTTP answer ({exc.message})")
    return httpx.ReadError("the connection to the upstream was lost")


_ERRORS = (aiohttp.ClientError, BlockedConnection)

#: After a small piece (a streamed token or a few), the next read starts no sooner than PACE seconds
#: after the last one started, so what arrives meanwhile is read in one go. Chat deltas are coalesced for
#: 30 ms before they reach the browser, so a 2 ms pace delays nothing a user sees; bulk bodies come in
#: large pieces and are never paced.
PACE = 0.002
PACE_BELOW = 16 * 1024


class _Body(httpx.AsyncByteStream):
    """A response body: whatever has arrived, in one piece per read."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
                if len(chunk) < PACE_BELOW and not content.is_eof():
                    # The next read starts PACE after this one started: a slow stream (a token every
                    # few ms or more) is read as it comes; a fast one in batches.
                    wait = started + PACE - loop.time()
                    if wait > 0:
                        await self._collect(wait)
        except _ERRORS as exc:
            raise _mapped(exc) from None

    async def _collect(self, seconds: float) -> None:
        """Let the kernel gather what arrives for ``seconds``: reading is paused meanwhile, so it is
        then taken in one system call instead of one per token."""
        connection = self._response.connection
        protocol = connection.protocol if connection is not None else None
        if protocol is None:
            await asyncio.sleep(seconds)
            return
        protocol.pause_reading()
        try:
            await asyncio.sleep(seconds)
        finally:
            if protocol.transport is not None and not protocol.transport.is_closing():
                protocol.resume_reading()

    async def aclose(self) -> None:
        # Read to its end: the connection goes back to the pool. Otherwise it is closed.
        if self._response.content.is_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over aiohttp with the guarantees in the module docstring."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self._limits = limits
        self._ssl = ssl_context or httpx.create_ssl_context()
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            for other in [other for other in self._sessions if other.is_closed()]:
                del self._sessions[other]  # a test's loop that has ended; its sockets went with it
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry,
                resolver=GuardedResolver(),
                ttl_dns_cache=10,
                ssl=self._ssl,
            )
            session = self._sessions[loop] = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        literal = literal_address(host)
        if literal is not None:
            reason = blocked_reason(literal)
            if reason:
                raise httpx.ConnectError(f"blocked address: the host is {reason}")
        timeout: dict[str, Any] = request.extensions.get("timeout", {})
        # aiohttp writes Host (from the URL) and the framing itself.
        skip = {b"host", b"transfer-encoding"}
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in request.headers.raw
            if k.lower() not in skip
        ]
        body: bytes | httpx.SyncByteStream | httpx.AsyncByteStream | None
        try:
            body = request.content or None
        except httpx.RequestNotRead:  # a streamed upload (the providers send none): aiohttp chunks it
            body = request.stream
        try:
            response = await self._session().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),  # waiting for a pooled connection plus connecting
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        except _ERRORS as exc:
            raise _mapped(exc) from None
        return httpx.Response(
            response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=_Body(response),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1"),
            },
        )

    async def aclose(self) -> None:
        sessions, self._sessions = self._sessions, {}
        loop = asyncio.get_running_loop()
        for owner, session in sessions.items():
            if owner is loop:
                await session.close()
