"""HTTPS on the LAN listener's port, with plain HTTP answered on the same port.

:class:`LanServer` is uvicorn's server and HTTP protocol behind a :class:`_SniffingFront` instead of
``loop.create_server``: the front accepts each connection and peeks at its first byte. A TLS handshake
goes to uvicorn's protocol with our own :class:`ssl.SSLContext` (from :func:`tls_context`; renewing the
certificate is ``load_cert_chain`` on that same context). Anything else goes to :class:`PlainHttp`, which
only redirects to HTTPS or hands out the CA certificate, so a phone can install it before it trusts us.
:mod:`server.lan_listener` opens and closes it; the certificates come from :mod:`server.security.local_ca`.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import ssl
from collections.abc import Callable
from typing import cast

import uvicorn

from server.listener import ReadyServer, host_for_url
from server.security import local_ca
from server.security.network_guard import GuardPolicy, parse_host

log = logging.getLogger(__name__)

#: Where the CA certificate can be downloaded, over plain HTTP and HTTPS on the LAN port and on loopback.
CA_PATH = "/api/lan/ca.crt"
#: How often a running LAN listener checks that its certificate is still good (expiry, addresses).
RENEW_CHECK_SECONDS = 24 * 3600
#: A client that sends nothing within this time after connecting is dropped.
FIRST_BYTE_TIMEOUT = 10.0
_MAX_PLAIN_REQUEST = 16 * 1024


def tls_context(cert: local_ca.ServerCertificate) -> ssl.SSLContext:
    """The LAN listener's server context (TLS 1.2+). It is ours, not uvicorn's: renewing the certificate
    is ``load_cert_chain`` again on the same context, which every *new* handshake then uses."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert.cert_file, cert.key_file)
    return context


class PlainHttp(asyncio.Protocol):
    """Plain HTTP on the LAN port: one request, answered with a 308 to the same URL over HTTPS, or with
    the CA certificate (``GET CA_PATH``) so a phone can install it before it trusts us. Nothing else is
    served without TLS. Hosts outside the allow-list get 421, as on the app (no open redirect)."""

    def __init__(self, port: int, guard: GuardPolicy, ca_der: Callable[[], bytes]) -> None:
        self._port = port
        self._guard = guard
        self._ca_der = ca_der
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self._timer = asyncio.get_running_loop().call_later(FIRST_BYTE_TIMEOUT, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end == -1:
            if len(self._buffer) > _MAX_PLAIN_REQUEST:
                self._reply(431, "Request Header Fields Too Large", [], b"")
            return
        self._answer(self._buffer[:end].decode("latin-1").split("\r\n"))

    def _answer(self, lines: list[str]) -> None:
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._reply(400, "Bad Request", [], b"")
            return
        method, target = parts[0], parts[1]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        host = parse_host(headers.get("host", ""))
        if host is None or not self._guard.host_allowed(host):
            self._reply(421, "Misdirected Request", [], b"host not allowed\n")
            return
        if not target.startswith("/") or target.startswith("//") or any(c <= " " for c in target):
            target = "/"
        if target.split("?", 1)[0] == CA_PATH and method in ("GET", "HEAD"):
            der = self._ca_der()
            headers_out = [
                ("Content-Type", "application/x-x509-ca-cert"),
                ("Content-Disposition", 'attachment; filename="modeltrain-ca.crt"'),
                ("Cache-Control", "no-store"),
            ]
            self._reply(200, "OK", headers_out, der, head=method == "HEAD")
            return
        location = f"https://{host_for_url(host)}:{self._port}{target}"
        self._reply(308, "Permanent Redirect", [("Location", location)], b"")

    def _reply(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, *, head: bool = False
    ) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "X-Content-Type-Options: nosniff"]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body))
        transport.close()


async def _wait_readable(conn: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    fd = conn.fileno()
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(fd, readable)
    except NotImplementedError:  # Windows' proactor loop has no add_reader: wait in a thread instead
        await asyncio.to_thread(select.select, [conn], [], [], FIRST_BYTE_TIMEOUT)
        return
    try:
        await ready
    finally:
        loop.remove_reader(fd)


class _SniffingFront:
    """Accepts on the LAN socket and looks at each connection's first byte (``MSG_PEEK``, nothing is
    consumed): ``0x16`` (a TLS handshake record) hands the socket to the event loop with our
    :class:`ssl.SSLContext` and uvicorn's HTTP protocol; anything else gets :class:`PlainHttp`. Quacks
    like the ``asyncio.Server`` uvicorn keeps in ``Server.servers`` (``close``/``wait_closed``)."""

    def __init__(
        self,
        sock: socket.socket,
        tls_protocol: Callable[[], asyncio.Protocol],
        plain_protocol: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
    ) -> None:
        self._sock = sock
        self._tls_protocol = tls_protocol
        self._plain_protocol = plain_protocol
        self._context = context
        self._tasks: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError:
                if self._sock.fileno() == -1:
                    return
                await asyncio.sleep(0.1)  # e.g. EMFILE: back off instead of spinning
                continue
            task = loop.create_task(self._handle(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        try:
            await asyncio.wait_for(_wait_readable(conn), FIRST_BYTE_TIMEOUT)
            first = conn.recv(1, socket.MSG_PEEK)
            if not first:
                conn.close()
                return
            if first[0] == 0x16:
                await loop.connect_accepted_socket(
                    self._tls_protocol, conn, ssl=self._context, ssl_handshake_timeout=FIRST_BYTE_TIMEOUT
                )
            else:
                await loop.connect_accepted_socket(self._plain_protocol, conn)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            conn.close()  # a failed handshake (e.g. the client does not trust our CA) or a silent client

    def close(self) -> None:
        self._accepting.cancel()
        for task in list(self._tasks):
            task.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(self._accepting, *self._tasks, return_exceptions=True)


class LanServer(ReadyServer):
    """The LAN listener: uvicorn's server and HTTP protocol behind a :class:`_SniffingFront` instead of
    ``loop.create_server``, so one port serves HTTPS and answers plain HTTP with a redirect. uvicorn's
    ``startup`` runs with no sockets (it then sets up its state only), and the front joins
    ``self.servers`` so uvicorn's own shutdown closes it. A daily task calls ``renew``."""

    def __init__(
        self,
        config: uvicorn.Config,
        context: ssl.SSLContext,
        plain_protocol: Callable[[], asyncio.Protocol],
        renew: Callable[[], object],
    ) -> None:
        super().__init__(config)
        self.context = context
        self._plain_protocol = plain_protocol
        self._renew = renew
        self._renewing: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        assert sockets and len(sockets) == 1
        await uvicorn.Server.startup(self, sockets=[])
        config = self.config
        loop = asyncio.get_running_loop()

        def tls_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=loop
            )

        front = _SniffingFront(sockets[0], tls_protocol, self._plain_protocol, self.context)
        self.servers.append(front)  # type: ignore[arg-type]
        self._renewing = loop.create_task(self._renew_daily())
        self.ready.set()

    async def _renew_daily(self) -> None:
        while True:
            await asyncio.sleep(RENEW_CHECK_SECONDS)
            try:
                await asyncio.to_thread(self._renew)
            except Exception:
                log.exception("renewing the LAN certificate failed; the current one stays in use")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
        await super().shutdown(sockets=sockets)
