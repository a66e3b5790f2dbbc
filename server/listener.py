"""A listening socket served by uvicorn: the building blocks of the embedded server's listeners.

The loopback listener (:class:`server.embedded.EmbeddedServer`) and the LAN listener
(:class:`server.lan_listener.LanController`) both bind their socket with :func:`bind_listener`, tag each
request with their name (``scope["modeltrain.listener"]``, read by ``server.security.desktop_token``)
through :class:`ListenerApp`, and run a :class:`ReadyServer` built from :func:`uvicorn_config`.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import Literal

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from server.http_protocol import CoalescingHttpToolsProtocol
from server.security import desktop_token
from server.settings import Settings


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``::`` is dual-stack)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(256)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


class ListenerApp:
    """Marks each request with the listener it came in on; remembers a lifespan start-up exception."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name
        self.lifespan_error: BaseException | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            try:
                await self.app(scope, receive, send)
            except BaseException as exc:
                self.lifespan_error = exc
                raise
            return
        scope[desktop_token.LISTENER_SCOPE_KEY] = self.name
        await self.app(scope, receive, send)


class ReadyServer(uvicorn.Server):
    """uvicorn.Server that signals a threading.Event once it listens, and whose shutdown first calls
    ``before_shutdown`` (the app's: ask every live reply to stop), so open SSE streams save their partial
    answers and end with their final event by themselves, instead of holding the shutdown for the whole
    grace period and being cancelled at its end."""

    def __init__(self, config: uvicorn.Config, *, before_shutdown: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.ready = threading.Event()
        self._before_shutdown = before_shutdown

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._before_shutdown is not None:
            self._before_shutdown()
        await super().shutdown(sockets=sockets)


def uvicorn_config(app: ASGIApp, settings: Settings, *, lifespan: Literal["on", "off"]) -> uvicorn.Config:
    """uvicorn's settings for both listeners: our HTTP protocol, and no WebSocket protocol (the app has
    no WebSocket routes; ``ws="auto"`` would import the ``websockets`` package into the desktop process,
    ~15 ms and ~1 MiB at start-up)."""
    return uvicorn.Config(
        app,
        http=CoalescingHttpToolsProtocol,
        ws="none",
        lifespan=lifespan,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        # Typed int, but any number of seconds works (it is a timeout for asyncio.wait_for).
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,  # type: ignore[arg-type]
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]
    )


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
