"""The OpenAI-compatible adapter against the fake OpenAI server, including hostile upstreams (D2)."""

from __future__ import annotations

import time
from contextlib import aclosing

import anyio
import httpx
import pytest

from server.providers.base import Delta, ProviderError, Timeouts
from server.providers.openai_compat import OpenAICompatProvider, SSEParser
from server.providers.registry import ProviderRegistry
from server.providers.streaming import LineSplitter, TextSanitizer
from tests.fakes import FakeOpenAI
from tests.server.providers.helpers import collect, collect_into, final, request, text_of, wait_for

pytestmark = pytest.mark.anyio

KEY = "sk-test"
REPLY = "Streaming works one word at a time."
FAST = Timeouts(connect=1.0, first_token=5.0, idle=5.0)


def adapter_for(registry: ProviderRegistry, fake: FakeOpenAI, key: str | None = KEY) -> OpenAICompatProvider:
    adapter = registry.build_for("openai", fake.url, key)
    assert isinstance(adapter, OpenAICompatProvider)
    return adapter


async def test_streams_deltas_and_usage(registry: ProviderRegistry) -> None:
    with FakeOpenAI(reply=REPLY) as fake:
        events = await collect(adapter_for(registry, fake), request("gpt-4o-mini"), FAST)
    assert text_of(events) == REPLY
    done = final(events)
    assert done.done_reason == "stop"
    assert done.usage["completion_tokens"] == len(REPLY.split())
    assert done.usage["prompt_tokens"] > 0


async def test_consecutive_answers_reuse_one_upstream_connection(registry: ProviderRegistry) -> None:
    with FakeOpenAI(reply=REPLY) as fake:
        adapter = adapter_for(registry, fake)
        for _ in range(3):
            assert text_of(await collect(adapter, request("gpt-4o-mini"), FAST)) == REPLY
        chats = [
            peer
            for (method, path), peer in zip(fake.requests, fake.peers, strict=True)
            if path.endswith("/chat/completions")
        ]
    assert len(chats) == 3
    assert len(set(chats)) == 1, "each answer opened a new connection"


async def test_max_tokens_is_sent_and_finish_reason_kept(registry: ProviderRegistry) -> None:
    with FakeOpenAI(reply=REPLY) as fake:
        events = await collect(adapter_for(registry, fake), request("gpt-4o-mini", max_tokens=2), FAST)
    assert text_of(events) == "Streaming works"
    assert final(events).done_reason == "length"


def test_request_body() -> None:
    adapter = OpenAICompatProvider("https://api.example.test/v1/", client=None)  # type: ignore[arg-type]
    body = adapter.build_body(request("gpt-4o", temperature=0.5, max_tokens=9, context_length=4096, seed=1))
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.5, 9, 1)
    assert "context_length" not in body
    assert adapter.base_url == "https://api.example.test/v1"


async def test_wrong_key_is_upstream_auth_without_leaking_the_key(registry: ProviderRegistry) -> None:
    secret = "sk-wrong-" + "q" * 40
    with FakeOpenAI(reply=REPLY) as fake:
        with pytest.raises(ProviderError) as info:
            await collect(adapter_for(registry, fake, secret), request("gpt-4o-mini"), FAST)
        with pytest.raises(ProviderError) as listing:
            await adapter_for(registry, fake, secret).list_models(timeout=2)
    for err in (info.value, listing.value):
        assert err.code == "upstream_auth"
        assert err.status == 502  # never 401: that would read as "your ModelTrain session expired"
        assert secret not in err.message


async def test_upstream_echoing_the_key_is_scrubbed(registry: ProviderRegistry) -> None:
    # A hostile upstream that puts the key back into its error message.
    secret = "sk-echo-" + "z" * 40

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": f"bad key {secret} given"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        adapter = OpenAICompatProvider("http://127.0.0.1:1/v1", client, api_key=secret)
        with pytest.raises(ProviderError) as info:
            await collect(adapter, request("m"), FAST)
    assert info.value.code == "upstream_bad_request"
    assert secret not in info.value.message and "***" in info.value.message


async def test_429_is_passed_on_with_retry_after(registry: ProviderRegistry) -> None:
    with FakeOpenAI(rate_limited=True, retry_after=7) as fake:
        with pytest.raises(ProviderError) as info:
            await collect(adapter_for(registry, fake), request("gpt-4o-mini"), FAST)
    assert (info.value.code, info.value.status, info.value.retry_after) == ("upstream_rate_limited", 429, 7)


async def test_server_error_and_unknown_model(registry: ProviderRegistry) -> None:
    with FakeOpenAI(server_error=True) as fake:
        with pytest.raises(ProviderError) as info:
            await collect(adapter_for(registry, fake), request("gpt-4o-mini"), FAST)
        assert (info.value.code, info.value.status) == ("upstream_error", 502)
        fake.server_error = False
        fake.strict_models = True
        with pytest.raises(ProviderError) as info:
            await collect(adapter_for(registry, fake), request("no-such-model"), FAST)
        assert (info.value.code, info.value.status) == ("model_not_found", 404)


async def test_mid_stream_error_event(registry: ProviderRegistry) -> None:
    with FakeOpenAI(reply=REPLY, fail_after_chunks=2) as fake:
        got: list[Delta] = []
        with pytest.raises(ProviderError) as info:
            await collect_into(got, adapter_for(registry, fake), request("gpt-4o-mini"), FAST)
    assert info.value.code == "upstream_error"
    assert "server had an error" in info.value.message
    assert "".join(d.content for d in got) == "Streaming works"


async def test_hostile_bad_json_is_skipped_and_counted(registry: ProviderRegistry) -> None:
    with FakeOpenAI(reply=REPLY, hostile="bad_json") as fake:
        adapter = adapter_for(registry, fake)
        events = await collect(adapter, request("gpt-4o-mini"), FAST)
    assert text_of(events) == REPLY
    assert adapter.skipped_events == 1
    final(events)


async def test_hostile_unknown_events_and_comments_are_ignored(registry: ProviderRegistry) -> None:
    with FakeOpenAI(reply=REPLY, hostile="unknown_events") as fake:
        adapter = adapter_for(registry, fake)
        events = await collect(adapter, request("gpt-4o-mini"), FAST)
    assert text_of(events) == REPLY
    assert adapter.skipped_events == len(REPLY.split())  # one "event: foo" per chunk
    final(events)


async def test_hostile_html_body_is_a_clean_error(registry: ProviderRegistry) -> None:
    with FakeOpenAI(reply=REPLY, hostile="html") as fake:
        with pytest.raises(ProviderError) as info:
            await collect(adapter_for(registry, fake), request("gpt-4o-mini"), FAST)
    assert info.value.code in ("upstream_error", "upstream_protocol")
    assert "<" not in info.value.message and "script" not in info.value.message


async def test_hostile_5mb_chunk_is_capped_and_the_connection_closed(registry: ProviderRegistry) -> None:
    with FakeOpenAI(reply=REPLY, hostile="huge_chunk") as fake:
        got: list[Delta] = []
        with pytest.raises(ProviderError) as info:
            await collect_into(got, adapter_for(registry, fake), request("gpt-4o-mini"), FAST)
        assert info.value.code == "upstream_protocol"
        assert all(len(d.content) < 1024 for d in got)
        assert await wait_for(lambda: fake.active_streams == 0)


async def test_hostile_ansi_is_stripped(registry: ProviderRegistry) -> None:
    with FakeOpenAI(reply=REPLY, hostile="ansi") as fake:
        events = await collect(adapter_for(registry, fake), request("gpt-4o-mini"), FAST)
    text = text_of(events)
    assert "\x1b" not in text and "\x07" not in text
    assert text == REPLY


async def test_set_cookie_is_never_kept(registry: ProviderRegistry) -> None:
    with FakeOpenAI(reply=REPLY, hostile="set_cookie") as fake:
        events = await collect(adapter_for(registry, fake), request("gpt-4o-mini"), FAST)
        final(events)
        await adapter_for(registry, fake).list_models(timeout=2)
    assert len(registry.client.cookies.jar) == 0
    assert dict(registry.client.cookies) == {}


async def test_first_token_and_idle_timeouts(registry: ProviderRegistry) -> None:
    with FakeOpenAI(reply=REPLY, hang=True) as fake:
        started = time.monotonic()
        with pytest.raises(ProviderError) as info:
            await collect(adapter_for(registry, fake), request("gpt-4o-mini"), Timeouts(0.5, 0.3, 5))
        assert info.value.code == "upstream_timeout" and "first-token" in info.value.message
        assert time.monotonic() - started < 2
        fake.hang = False
        fake.token_delay = 2.0
        with pytest.raises(ProviderError) as info:
            await collect(adapter_for(registry, fake), request("gpt-4o-mini"), Timeouts(0.5, 2, 0.3))
        assert info.value.code == "upstream_timeout" and "idle" in info.value.message


async def test_cancelling_the_consumer_closes_the_upstream(registry: ProviderRegistry) -> None:
    with FakeOpenAI(reply=" ".join(["word"] * 500), token_delay=0.02) as fake:
        adapter = adapter_for(registry, fake)
        seen = anyio.Event()

        async def consume() -> None:
            count = 0
            async for _ in adapter.stream_chat(request("gpt-4o-mini"), FAST):
                count += 1
                if count == 3:
                    seen.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await seen.wait()
            tg.cancel_scope.cancel()
        assert await wait_for(lambda: fake.active_streams == 0, timeout=1.0)
        assert fake.disconnects == 1
        # aclose() on the iterator does the same
        async with aclosing(adapter.stream_chat(request("gpt-4o-mini"), FAST)) as events:
            async for _ in events:
                break
        assert await wait_for(lambda: fake.active_streams == 0, timeout=1.0)


async def test_list_models(registry: ProviderRegistry) -> None:
    with FakeOpenAI(models=("gpt-4o-mini", "gpt-4o", "o3")) as fake:
        models = await adapter_for(registry, fake).list_models(timeout=2)
    assert [m.name for m in models] == ["gpt-4o", "gpt-4o-mini", "o3"]


async def test_eof_without_done_is_an_error() -> None:
    body = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        adapter = OpenAICompatProvider("http://127.0.0.1:1/v1", client)
        got: list = []
        with pytest.raises(ProviderError) as info:
            await collect_into(got, adapter, request("m"), FAST)
    assert info.value.code == "upstream_error"
    assert text_of(got) == "Hi"


async def test_redirects_are_not_followed(registry: ProviderRegistry) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"location": "http://169.254.169.254/latest/meta-data"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=False) as client:
        adapter = OpenAICompatProvider("http://127.0.0.1:1/v1", client)
        with pytest.raises(ProviderError) as info:
            await collect(adapter, request("m"), FAST)
    assert info.value.code == "upstream_protocol" and "redirect" in info.value.message
    assert registry.client.follow_redirects is False
    assert registry.client.trust_env is False


# --- SSE and line parsing (docs/protocols.md, §E.6) ------------------------------------------------------


def events_of(chunks: list[bytes]) -> list[tuple[str, bytes]]:
    splitter, parser, out = LineSplitter(sse=True), SSEParser(), []
    for chunk in chunks:
        for line in splitter.feed(chunk):
            event = parser.feed(line)
            if event is not None:
                out.append(event)
    return out


def test_sse_line_endings_split_anywhere() -> None:
    stream = (
        b'\xef\xbb\xbfdata: {"a":1}\r\n\r\n: ping\r\rdata: x\rdata: y\r\r'
        + b"event: foo\ndata: z\n\ndata:[DONE]\n\n"
    )
    expected = [("message", b'{"a":1}'), ("message", b"x\ny"), ("foo", b"z"), ("message", b"[DONE]")]
    assert events_of([stream]) == expected
    for size in (1, 2, 3, 7):  # every split point, including inside CRLF and the BOM
        assert events_of([stream[i : i + size] for i in range(0, len(stream), size)]) == expected


def test_sse_event_size_is_capped() -> None:
    parser = SSEParser()
    half = b"data: " + b"x" * (512 * 1024)
    assert parser.feed(half) is None  # half of the 1024 KiB cap: still buffering
    with pytest.raises(ProviderError) as info:
        parser.feed(half)
    assert info.value.code == "upstream_protocol"


def test_line_splitter_caps_unterminated_lines() -> None:
    splitter = LineSplitter(max_bytes=1024)
    assert splitter.feed(b"a" * 1000) == []
    with pytest.raises(ProviderError):
        splitter.feed(b"b" * 100)


def test_sanitizer_handles_escape_sequences_split_across_deltas() -> None:
    s = TextSanitizer()
    out = [s.feed(x) for x in ("red \x1b[3", "1mtext\x1b", "[0m done", "\x1b]0;ti", "tle\x07!")]
    assert "".join(out) == "red text done!"
    assert s.feed("tab\tand\nnewline\r kept") == "tab\tand\nnewline kept"
