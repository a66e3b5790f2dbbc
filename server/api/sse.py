"""Server-Sent Events: framing, keep-alive comments, and a response that notices client disconnects.

Framing follows the WHATWG rules (docs/protocols.md, E.6): every event ends with a blank line, a value with
line breaks becomes several ``data:`` lines (CRLF, LF and CR all split), and ``: ping`` comments keep
idle proxies from dropping the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.stream_events import KEEPALIVE, ServerSentEvent

#: How often a progress stream (pulls, imports, installs) sends a keep-alive comment while it is quiet.
KEEPALIVE_SECONDS = 15.0

__all__ = [
    "KEEPALIVE",
    "PING",
    "SSE_HEADERS",
    "EventStreamResponse",
    "LastChunk",
    "ServerSentEvent",
    "encode_comment",
    "encode_event",
    "encode_events",
    "with_keepalive",
]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
PING = b": ping\n\n"

SSE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}


class LastChunk(bytes):
    """The final piece of a response body: :class:`EventStreamResponse` sends it together with the end
    of the response (one write instead of two)."""


def _single_line(value: str, what: str) -> str:
    if _LINE_BREAK.search(value) or "\x00" in value:
        raise ValueError(f"an SSE {what} cannot contain line breaks or NUL")
    return value


def encode_event(event: str | None, data: Any, id: str | None = None) -> bytes:
    """One event. ``data`` that is not a string is sent as compact JSON (always one line)."""
    if not isinstance(data, str):
        data = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    parts: list[str] = []
    if id is not None:
        parts.append(f"id: {_single_line(id, 'id')}\n")
    if event is not None:
        parts.append(f"event: {_single_line(event, 'event name')}\n")
    for line in _LINE_BREAK.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


async def encode_events(batches: AsyncIterator[Sequence[ServerSentEvent]]) -> AsyncIterator[bytes]:
    """Encode a source of event batches that does its own keep-alive (a batch ``[KEEPALIVE]`` when
    idle). Each batch becomes one chunk, so events produced together (meta and the first delta, the
    last delta and done) leave in one write; a batch ending with a ``last`` event ends the response.
    No task per event, unlike :func:`with_keepalive`, which suits any source."""
    try:
        async for batch in batches:
            chunk = b"".join(PING if e is KEEPALIVE else encode_event(e.event, e.data, e.id) for e in batch)
            yield LastChunk(chunk) if batch and batch[-1].last else chunk
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()


def encode_comment(text: str = "ping") -> bytes:
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode("utf-8") + b"\n"


async def with_keepalive(
    events: AsyncIterator[ServerSentEvent], interval: float, *, clock: Callable[[], float] | None = None
) -> AsyncIterator[bytes]:
    """Encode ``events`` and add a ``: ping`` comment whenever nothing was sent for ``interval`` seconds."""
    iterator = events.__aiter__()
    pending: asyncio.Task | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield PING
                continue
            task, pending = pending, None
            try:
                item = task.result()
            except StopAsyncIteration:
                return
            yield encode_event(item.event, item.data, item.id)
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None and (pending is None or pending.done()):
            # RuntimeError: already closing; CancelledError: being cancelled.
            with contextlib.suppress(RuntimeError, asyncio.CancelledError):
                await aclose()


class EventStreamResponse(Response):
    """``text/event-stream`` that streams ``body`` and cancels it as soon as the client goes away.

    The disconnect listener runs whatever the server's ASGI spec version, so an idle stream (no bytes
    to write) still notices a closed connection at once; ``on_disconnect`` runs synchronously then.
    """

    media_type = "text/event-stream"
    charset = "utf-8"

    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self.body_iterator = body
        self.status_code = status_code
        self.background = None
        self.on_disconnect = on_disconnect
        self.init_headers({**SSE_HEADERS, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        disconnected = False

        async def stream(cancel: anyio.CancelScope) -> None:
            try:
                await send(
                    {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
                )
                async for chunk in self.body_iterator:
                    if isinstance(chunk, LastChunk):
                        await send({"type": "http.response.body", "body": bytes(chunk), "more_body": False})
                        return
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass
            finally:
                cancel.cancel()

        async def listen(cancel: anyio.CancelScope) -> None:
            nonlocal disconnected
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                    if self.on_disconnect is not None:
                        self.on_disconnect()
                    cancel.cancel()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(stream, tg.cancel_scope)
            tg.start_soon(listen, tg.cancel_scope)
        aclose = getattr(self.body_iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(RuntimeError):
                await aclose()
