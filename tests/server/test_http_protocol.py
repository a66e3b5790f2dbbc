"""server/http_protocol.py: writes of one event-loop iteration leave in one socket write."""

from __future__ import annotations

import asyncio
import socket

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from server.http_protocol import CoalescingHttpToolsProtocol, CoalescingTransport


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_writes_of_one_iteration_are_joined_and_sent_before_the_next() -> None:
    async def scenario() -> RecordingTransport:
        raw = RecordingTransport()
        t = CoalescingTransport(raw, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(memoryview(b"first"))
        t.write(b"")
        assert raw.writes == [] and t.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nfirst")
        await asyncio.sleep(0)
        assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nfirst"]
        t.write(b"second")
        await asyncio.sleep(0)
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is delegated
        return raw

    raw = asyncio.run(scenario())
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\nfirst", b"second"]


def test_close_sends_what_is_pending_first_and_abort_drops_it() -> None:
    async def scenario() -> tuple[RecordingTransport, RecordingTransport]:
        loop = asyncio.get_running_loop()
        closed, aborted = RecordingTransport(), RecordingTransport()
        a, b = CoalescingTransport(closed, loop), CoalescingTransport(aborted, loop)
        a.write(b"last words")
        a.close()
        b.write(b"never sent")
        b.abort()
        await asyncio.sleep(0)  # the scheduled flushes find nothing left to send
        return closed, aborted

    closed, aborted = asyncio.run(scenario())
    assert closed.events == ["write", "close"] and closed.writes == [b"last words"]
    assert aborted.events == ["abort"] and aborted.writes == []


def test_a_server_with_the_protocol_answers_plain_and_streamed_requests() -> None:
    app = FastAPI()

    @app.get("/json")
    async def json_answer() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks():
            for i in range(3):
                yield f"chunk {i}\n".encode()
                await asyncio.sleep(0.01)

        return StreamingResponse(chunks(), media_type="text/plain")

    async def scenario() -> tuple[httpx.Response, list[bytes]]:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, http=CoalescingHttpToolsProtocol, log_config=None, lifespan="off")
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110  (uvicorn offers a flag, no event to await)
            await asyncio.sleep(0.01)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                plain = await client.get("/json")
                async with client.stream("GET", "/stream") as r:
                    parts = [chunk async for chunk in r.aiter_raw()]
        finally:
            server.should_exit = True
            await task
        return plain, parts

    plain, parts = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert plain.status_code == 200 and plain.json() == {"hello": "world"}
    assert b"".join(parts) == b"chunk 0\nchunk 1\nchunk 2\n"
    assert len(parts) == 3  # chunks produced apart still leave apart: nothing is held back
