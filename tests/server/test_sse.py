"""server/api/sse.py: WHATWG framing, keep-alive comments, disconnect handling."""

from __future__ import annotations

import asyncio

import pytest

from server.api.sse import (
    KEEPALIVE,
    PING,
    EventStreamResponse,
    LastChunk,
    ServerSentEvent,
    encode_comment,
    encode_event,
    encode_events,
    with_keepalive,
)
from tests.server.chat_support import parse_sse


def test_event_framing_ends_with_blank_line_and_json_on_one_line() -> None:
    raw = encode_event("delta", {"content": "a\nb", "x": "ü"})
    assert raw == 'event: delta\ndata: {"content":"a\\nb","x":"ü"}\n\n'.encode()
    events, _ = parse_sse(raw.decode())
    assert events[0].event == "delta" and events[0].data == {"content": "a\nb", "x": "ü"}


@pytest.mark.parametrize("text", ["one\ntwo", "one\r\ntwo", "one\rtwo", "one\n\ntwo\n"])
def test_multiline_string_data_is_split_into_data_lines(text: str) -> None:
    raw = encode_event("message", text).decode()
    assert raw.endswith("\n\n")
    body = raw[:-2]
    assert all(line.startswith(("event: ", "data: ")) for line in body.split("\n"))
    events, _ = parse_sse(raw)
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert events[0].data == expected


def test_event_names_and_ids_cannot_inject_lines() -> None:
    with pytest.raises(ValueError, match="cannot contain line breaks"):
        encode_event("delta\ndata: evil", {})
    with pytest.raises(ValueError, match="cannot contain line breaks"):
        encode_event("delta", {}, id="1\r2")
    assert encode_event(None, "x", id="7") == b"id: 7\ndata: x\n\n"


def test_comment_format() -> None:
    assert encode_comment() == PING == b": ping\n\n"
    assert encode_comment("a\nb") == b": a\n: b\n\n"


def test_keepalive_pings_while_the_source_is_idle_then_passes_events() -> None:
    async def scenario() -> list[bytes]:
        release = asyncio.Event()

        async def source():
            yield ServerSentEvent("meta", {"n": 1})
            await release.wait()
            yield ServerSentEvent("done", {"n": 2})

        out: list[bytes] = []
        async for chunk in with_keepalive(source(), interval=0.01):
            out.append(chunk)
            if out.count(PING) >= 3:
                release.set()
        return out

    out = asyncio.run(asyncio.wait_for(scenario(), 5))
    assert out[0].startswith(b"event: meta")
    assert out[-1].startswith(b"event: done")
    assert out.count(PING) >= 3


def test_keepalive_closing_early_closes_the_source() -> None:
    closed = asyncio.Event()

    async def scenario() -> None:
        async def source():
            try:
                while True:
                    yield ServerSentEvent("delta", {"content": "x"})
            finally:
                closed.set()

        stream = with_keepalive(source(), interval=1)
        assert (await stream.__anext__()).startswith(b"event: delta")
        await stream.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 5))
    assert closed.is_set()


def test_encode_events_sends_each_batch_as_one_chunk_and_closes_the_source() -> None:
    closed = asyncio.Event()
    meta, delta = ServerSentEvent("meta", {"id": 1}), ServerSentEvent("delta", {"content": "x"})
    done = ServerSentEvent("done", {"ok": True}, last=True)

    async def scenario() -> list[bytes]:
        async def source():
            try:
                yield [meta, delta]
                yield [KEEPALIVE]
                yield [delta, done]
                yield [ServerSentEvent("delta", {"content": "never read"})]
            finally:
                closed.set()

        stream = encode_events(source())
        out = [await stream.__anext__() for _ in range(3)]
        await stream.aclose()
        return out

    out = asyncio.run(asyncio.wait_for(scenario(), 5))
    assert out == [
        encode_event("meta", {"id": 1}) + encode_event("delta", {"content": "x"}),
        PING,
        encode_event("delta", {"content": "x"}) + encode_event("done", {"ok": True}),
    ]
    assert [isinstance(chunk, LastChunk) for chunk in out] == [False, False, True]
    assert closed.is_set()


def test_a_last_chunk_ends_the_response_in_the_same_write() -> None:
    sent: list[dict] = []

    async def scenario() -> None:
        async def body():
            yield b"event: meta\ndata: 1\n\n"
            yield LastChunk(b"event: done\ndata: 2\n\n")
            raise AssertionError("nothing is read after the last chunk")

        async def receive():
            await asyncio.Event().wait()  # the client stays connected
            return {}

        async def send(message):
            sent.append(message)

        await EventStreamResponse(body())({"type": "http"}, receive, send)

    asyncio.run(asyncio.wait_for(scenario(), 5))
    bodies = [(m["body"], m["more_body"]) for m in sent if m["type"] == "http.response.body"]
    assert bodies == [(b"event: meta\ndata: 1\n\n", True), (b"event: done\ndata: 2\n\n", False)]
