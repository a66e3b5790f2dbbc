"""Plumbing shared by the fake upstream servers (fake Ollama, fake OpenAI).

A fake is a small ASGI app served by uvicorn in a background thread. The listening socket is bound here,
before the thread starts, so ``port=0`` works and a taken port fails synchronously in ``start()``.

Streamed answers go through :class:`LazyStream`, which behaves like Go's ``net/http``: nothing (not even
the status line) is written before the first body chunk, every chunk is flushed on its own, and the
producer is cancelled the moment the client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typing_extensions import Self

POLL_INTERVAL = 0.02
"""Seconds between two looks at the ``hang`` knob and the stop flag."""

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


class HTTPError(Exception):
    """An error answer: raised by a handler, or by a stream producer to abort the stream.

    Before the first body byte it becomes a real HTTP error; once streaming has started, the stream's
    ``frame_error`` turns ``payload`` into one last chunk.
    """

    def __init__(self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None):
        super().__init__(status, dict(payload))
        self.status = status
        self.payload = dict(payload)
        self.headers = dict(headers or {})


class FakeServer:
    """Base class: owns the socket, the uvicorn thread and the bookkeeping every fake exposes.

    Attributes for tests: ``requests`` (``(method, path)`` pairs in arrival order), ``peers`` (their
    client addresses), ``active_streams``
    (streamed or generating requests currently open), ``disconnects`` (those that ended because the
    client went away) and the ``hang`` knob (accept requests but send nothing until cleared or stopped).
    """

    def __init__(self, host: str, port: int, *, hang: bool = False) -> None:
        self.host = host
        self.port = port
        self.hang = hang
        self.requests: list[tuple[str, str]] = []
        #: The client address of each request, in the same order: one address = one reused connection.
        self.peers: list[tuple[str, int]] = []
        self.active_streams = 0
        self.disconnects = 0
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def build_app(self) -> ASGIApp:
        """Return the ASGI app to serve (implemented by each fake)."""
        raise NotImplementedError

    @property
    def origin(self) -> str:
        """``http://host:port``, with an unspecified bind address replaced by loopback."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> Self:
        """Bind, serve in a background thread and return once requests are being answered.

        Raises ``OSError`` if the address cannot be bound (e.g. the port is taken).
        """
        self._stopping.clear()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._recording(self.build_app()),
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"{type(self).__name__} failed to start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving: open streams end at their next token, then the thread is joined."""
        if self._server is None or self._thread is None:
            return
        self._stopping.set()
        self._server.should_exit = True
        self._thread.join(_STOP_TIMEOUT)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def hold(self) -> None:
        """Wait while the ``hang`` knob is set (and the server is not stopping)."""
        # The test thread flips ``hang``: a plain flag, as an asyncio.Event is not thread-safe.
        while self.hang and not self.stopping:  # noqa: ASYNC110
            await asyncio.sleep(POLL_INTERVAL)

    def held(
        self, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a non-streaming Starlette endpoint so that it honours ``hang`` before answering."""

        async def wrapper(request: Request) -> Response:
            if self.hang:
                await request.body()  # consume it, so that receive() only reports the disconnect
                if not await run_until_disconnect(self.hold(), request.receive):
                    return Response(status_code=499)  # nobody is left to read it
            return await endpoint(request)

        return wrapper

    def _recording(self, app: ASGIApp) -> ASGIApp:
        async def record(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                self.requests.append((scope["method"], scope["path"]))
                self.peers.append(tuple(scope["client"] or ("", 0)))
            await app(scope, receive, send)

        return record


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def run_until_disconnect(work: Awaitable[None], receive: Receive) -> bool:
    """Run ``work`` while watching the connection; cancel it if the client goes away.

    Returns True if ``work`` finished, False if the client disconnected first. The request body must
    already have been read. Exceptions raised by ``work`` propagate.
    """
    work_task = asyncio.ensure_future(work)
    gone_task = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait((work_task, gone_task), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work_task, gone_task):
            task.cancel()
        await asyncio.gather(work_task, gone_task, return_exceptions=True)
    if work_task.cancelled():
        return False
    work_task.result()
    return True


class LazyStream:
    """ASGI response whose body is produced by an async generator of byte chunks.

    * The status line and headers are sent together with the first chunk, so a pause before it (model
      load, ``hang``) sends no bytes at all.
    * An :class:`HTTPError` from the generator becomes ``render_error(exc)`` if nothing was sent yet,
      otherwise one final ``frame_error(payload)`` chunk; the response then ends.
    * A client disconnect cancels the generator; ``owner.active_streams``/``owner.disconnects`` track it.
    * ``buffered=True`` collects the whole body and sends it with a Content-Length (non-streamed answers
      that still take time to produce, e.g. ``stream:false``).
    """

    def __init__(
        self,
        owner: FakeServer,
        chunks: AsyncGenerator[bytes, None],
        *,
        media_type: str,
        render_error: Callable[[HTTPError], Response],
        frame_error: Callable[[Mapping[str, Any]], bytes],
        headers: Mapping[str, str] | None = None,
        buffered: bool = False,
    ) -> None:
        self._owner = owner
        self._chunks = chunks
        self._headers = [(b"content-type", media_type.encode())] + [
            (name.lower().encode(), value.encode()) for name, value in (headers or {}).items()
        ]
        self._render_error = render_error
        self._frame_error = frame_error
        self._buffered = buffered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._owner.active_streams += 1
        client_gone = False
        try:
            client_gone = not await run_until_disconnect(self._pump(scope, receive, send), receive)
        finally:
            await self._chunks.aclose()
            self._owner.active_streams -= 1
            if client_gone:
                self._owner.disconnects += 1

    async def _pump(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        collected: list[bytes] = []
        try:
            async for chunk in self._chunks:
                if self._buffered:
                    collected.append(chunk)
                    continue
                if not started:
                    await send({"type": "http.response.start", "status": 200, "headers": self._headers})
                    started = True
                await send(_body(chunk, more=True))
        except HTTPError as exc:
            if not started:
                await self._render_error(exc)(scope, receive, send)
                return
            await send(_body(self._frame_error(exc.payload), more=True))
        if self._buffered:
            body = b"".join(collected)
            headers = [*self._headers, (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send(_body(body, more=False))
            return
        if not started:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        await send(_body(b"", more=False))


def _body(data: bytes, *, more: bool) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


# --- helpers for the fakes' answers -------------------------------------------------------------------

_TOKEN = re.compile(r"\s*\S+|\s+")

_FILLER = (
    "This answer comes from a fake server, not from a model. It is streamed one word at a time so that "
    "clients can be tested for incremental rendering, cancellation and token accounting, and the same "
    "question always gets the same words back."
)


def split_tokens(text: str) -> list[str]:
    """Split text into word-sized tokens (leading whitespace attached); they join back to ``text``."""
    return _TOKEN.findall(text)


def message_text(content: Any) -> str:
    """Plain text of a chat message ``content``: a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Text of the last user message ("" if there is none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def clip(text: str, limit: int = 60) -> str:
    """``text`` on one line, shortened to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def default_reply(messages: Sequence[Mapping[str, Any]]) -> str:
    """The deterministic answer used when no ``reply`` knob is set (several dozen tokens)."""
    return f'You said: "{clip(last_user_text(messages))}". {_FILLER}'


ReplyKnob = Callable[[list[dict[str, Any]]], str] | str | None


def resolve_reply(reply: ReplyKnob, messages: list[dict[str, Any]]) -> str:
    """Apply a ``reply`` knob (callable, fixed string or None for :func:`default_reply`)."""
    if reply is None:
        return default_reply(messages)
    return reply(messages) if callable(reply) else reply


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.01)
    return True


class _Interrupted(BaseException):
    """Raised by the signal handler to leave the foreground wait."""


def run_until_signalled(server: FakeServer, on_started: Callable[[], None] = lambda: None) -> None:
    """Start ``server``, call ``on_started``, serve until SIGINT/SIGTERM, then stop cleanly.

    The handlers are installed first, so a signal sent as soon as the server answers is never lost.
    Errors from ``server.start()`` (e.g. ``OSError`` for a taken port) propagate.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        with contextlib.suppress(_Interrupted):
            server.start()
            on_started()
            threading.Event().wait()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server.stop()
