"""The Ollama adapter against the protocol-faithful fake Ollama (real HTTP on loopback)."""

from __future__ import annotations

import json
import time

import anyio
import httpx
import pytest

from server.providers.base import Delta, Done, ProviderError, Timeouts
from server.providers.ollama import OllamaProvider
from server.providers.registry import ProviderRegistry
from tests.fakes import FakeOllama
from tests.server.providers.helpers import (
    collect,
    collect_into,
    final,
    request,
    text_of,
    thinking_of,
    wait_for,
)

pytestmark = pytest.mark.anyio

REPLY = "The quick brown fox jumps over the lazy dog."
FAST = Timeouts(connect=1.0, first_token=5.0, idle=5.0)


async def test_tokens_that_arrive_together_become_one_delta_and_an_error_after_them_keeps_them() -> None:
    lines = [
        {"model": "m", "message": {"role": "assistant", "content": w}, "done": False}
        for w in ("a ", "b ", "c")
    ]

    def body(*tail: dict) -> bytes:  # the whole answer in one network read
        return b"".join(json.dumps(x).encode() + b"\n" for x in (*lines, *tail))

    answers = iter(
        [
            body({"model": "m", "done": True, "done_reason": "stop", "eval_count": 3}),
            body({"error": "model crashed"}),
        ]
    )

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=next(answers), headers={"content-type": "application/x-ndjson"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        adapter = OllamaProvider("http://127.0.0.1:1", client)
        events = await collect(adapter, request("m"), FAST)
        assert events[0] == Delta(content="a b c", thinking="")
        assert isinstance(events[1], Done) and len(events) == 2
        got: list = []
        with pytest.raises(ProviderError) as info:
            await collect_into(got, adapter, request("m"), FAST)
    assert got == [Delta(content="a b c", thinking="")]  # passed on before the error
    assert info.value.code == "upstream_error" and "model crashed" in info.value.message


async def test_streams_deltas_then_one_done_with_usage_and_timings(registry: ProviderRegistry) -> None:
    with FakeOllama(reply=REPLY, token_delay=0.01) as fake:
        events = await collect(registry.build_for("ollama", fake.url), request("llama3.2"), FAST)
    assert text_of(events) == REPLY
    # Tokens that arrive apart are passed on apart: really streamed, not one blob at the end.
    assert len([e for e in events if isinstance(e, Delta)]) > 1
    done = final(events)
    assert done.done_reason == "stop"
    assert done.usage["completion_tokens"] == len(REPLY.split())
    assert done.usage["prompt_tokens"] > 0
    assert done.timings["total_ms"] >= done.timings["generate_ms"] >= 0


async def test_consecutive_answers_reuse_one_upstream_connection(registry: ProviderRegistry) -> None:
    with FakeOllama(reply=REPLY) as fake:
        adapter = registry.build_for("ollama", fake.url)
        for _ in range(3):
            assert text_of(await collect(adapter, request("llama3.2"), FAST)) == REPLY
        chats = [
            peer
            for (_method, path), peer in zip(fake.requests, fake.peers, strict=True)
            if path == "/api/chat"
        ]
    assert len(chats) == 3
    assert len(set(chats)) == 1, "each answer opened a new connection"


async def test_thinking_arrives_as_thinking_deltas(registry: ProviderRegistry) -> None:
    with FakeOllama(reply=REPLY) as fake:
        adapter = registry.build_for("ollama", fake.url)
        events = await collect(adapter, request("qwen3:0.6b"), FAST)
    assert thinking_of(events).strip()
    assert text_of(events) == REPLY
    first_content = next(i for i, e in enumerate(events) if isinstance(e, Delta) and e.content)
    assert all(not e.content for e in events[:first_content])  # thinking first, then the answer


async def test_think_false_is_sent_and_honoured(registry: ProviderRegistry) -> None:
    with FakeOllama(reply=REPLY) as fake:
        req = request("qwen3:0.6b")
        req = type(req)(model=req.model, messages=req.messages, options={}, think=False)
        events = await collect(registry.build_for("ollama", fake.url), req, FAST)
    assert thinking_of(events) == ""
    assert text_of(events) == REPLY


async def test_max_tokens_maps_to_num_predict(registry: ProviderRegistry) -> None:
    with FakeOllama(reply=REPLY) as fake:
        events = await collect(
            registry.build_for("ollama", fake.url), request("llama3.2", max_tokens=3), FAST
        )
    assert text_of(events) == "The quick brown"
    assert final(events).done_reason == "length"


def test_option_mapping() -> None:
    adapter = OllamaProvider("http://127.0.0.1:11434", client=None, keep_alive="10m")  # type: ignore[arg-type]
    body = adapter.build_body(
        request(
            "llama3.2",
            temperature=0.2,
            top_p=0.9,
            seed=7,
            stop="###",
            max_tokens=64,
            context_length=8192,
            something_else="dropped",
        )
    )
    assert body["stream"] is True
    assert body["options"] == {
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["###"],
        "num_predict": 64,
        "num_ctx": 8192,
    }
    assert body["keep_alive"] == "10m"
    assert "think" not in body
    assert adapter.build_body(request("m", keep_alive="300"))["keep_alive"] == "10m"  # bad duration ignored
    assert adapter.build_body(request("m", keep_alive=0))["keep_alive"] == 0


async def test_mid_stream_error_line_raises_after_partial_text(registry: ProviderRegistry) -> None:
    with FakeOllama(reply=REPLY, fail_after_chunks=3) as fake:
        got: list[Delta] = []
        with pytest.raises(ProviderError) as info:
            await collect_into(got, registry.build_for("ollama", fake.url), request("llama3.2"), FAST)
    assert all(isinstance(event, Delta) for event in got)
    assert info.value.code == "upstream_error"
    assert "unexpected EOF" in info.value.message
    assert "".join(d.content for d in got) == "The quick brown"


async def test_error_before_the_stream_is_an_http_error(registry: ProviderRegistry) -> None:
    with FakeOllama(fail_after_chunks=0) as fake:
        with pytest.raises(ProviderError) as info:
            await collect(registry.build_for("ollama", fake.url), request("llama3.2"), FAST)
    assert (info.value.code, info.value.status) == ("upstream_error", 502)


async def test_busy_503_is_passed_on_with_retry_after(registry: ProviderRegistry) -> None:
    with FakeOllama(busy=True) as fake:
        with pytest.raises(ProviderError) as info:
            await collect(registry.build_for("ollama", fake.url), request("llama3.2"), FAST)
    assert (info.value.code, info.value.status) == ("upstream_busy", 503)
    assert info.value.retry_after is not None and info.value.retry_after >= 1


async def test_unknown_model_is_model_not_found(registry: ProviderRegistry) -> None:
    with FakeOllama() as fake:
        with pytest.raises(ProviderError) as info:
            await collect(registry.build_for("ollama", fake.url), request("nope:1b"), FAST)
    assert (info.value.code, info.value.status) == ("model_not_found", 404)


async def test_stream_ending_without_done_is_a_failure(registry: ProviderRegistry) -> None:
    with FakeOllama(reply=REPLY, token_delay=0.05) as fake:
        adapter = registry.build_for("ollama", fake.url)

        async def read_all() -> None:
            async for event in adapter.stream_chat(request("llama3.2"), FAST):
                if isinstance(event, Delta):
                    fake.stop()  # the upstream goes away mid-answer (FIN without done:true)

        with pytest.raises(ProviderError) as info:
            await read_all()
    assert info.value.code in ("upstream_error",)


async def test_ansi_and_control_characters_are_stripped(registry: ProviderRegistry) -> None:
    hostile = "Hello \x1b[31mred\x1b[0m \x1b]0;title\x07world\x07 and\x00 bell"
    with FakeOllama(reply=hostile) as fake:
        events = await collect(registry.build_for("ollama", fake.url), request("llama3.2"), FAST)
    text = text_of(events)
    assert text == "Hello red world and bell"
    assert not any(ord(c) < 32 and c not in "\n\t" for c in text)


async def test_oversized_line_is_refused_and_the_connection_closed(registry: ProviderRegistry) -> None:
    with FakeOllama(reply="start " + "x" * (2 * 1024 * 1024) + " end") as fake:
        with pytest.raises(ProviderError) as info:
            await collect(registry.build_for("ollama", fake.url), request("llama3.2"), FAST)
        assert info.value.code == "upstream_protocol"
        assert await wait_for(lambda: fake.active_streams == 0)


async def test_first_token_timeout_covers_a_slow_model_load(registry: ProviderRegistry) -> None:
    with FakeOllama(load_delay=3.0) as fake:
        started = time.monotonic()
        with pytest.raises(ProviderError) as info:
            await collect(
                registry.build_for("ollama", fake.url),
                request("llama3.2"),
                Timeouts(connect=0.5, first_token=0.3, idle=5.0),
            )
        elapsed = time.monotonic() - started
        assert (info.value.code, info.value.status) == ("upstream_timeout", 504)
        assert "first-token" in info.value.message
        assert elapsed < 2.0
        assert await wait_for(lambda: fake.active_streams == 0)


async def test_hanging_upstream_hits_the_first_token_timeout(registry: ProviderRegistry) -> None:
    with FakeOllama(hang=True) as fake:
        with pytest.raises(ProviderError) as info:
            await collect(
                registry.build_for("ollama", fake.url),
                request("llama3.2"),
                Timeouts(connect=0.5, first_token=0.3, idle=5.0),
            )
        assert info.value.code == "upstream_timeout"
        fake.hang = False


async def test_idle_timeout_applies_between_chunks_not_as_a_total(registry: ProviderRegistry) -> None:
    # 20 tokens 0.1 s apart take ~2 s in total: fine with a 0.5 s idle timeout (it is per chunk).
    with FakeOllama(reply=" ".join(["tok"] * 20), token_delay=0.1) as fake:
        events = await collect(
            registry.build_for("ollama", fake.url),
            request("llama3.2"),
            Timeouts(connect=1, first_token=2, idle=0.5),
        )
        assert final(events).usage["completion_tokens"] == 20
        # A stall longer than the idle timeout after the first token fails.
        fake.token_delay = 2.0
        got: list[Delta] = []
        with pytest.raises(ProviderError) as info:
            await collect_into(
                got,
                registry.build_for("ollama", fake.url),
                request("llama3.2"),
                Timeouts(connect=1, first_token=2, idle=0.3),
            )
        assert info.value.code == "upstream_timeout"
        assert "idle" in info.value.message
        assert len(got) == 1


async def test_connect_timeout(registry: ProviderRegistry, unresponsive_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await collect(
            registry.build_for("ollama", f"http://127.0.0.1:{unresponsive_port}"),
            request("llama3.2"),
            Timeouts(connect=0.3, first_token=5, idle=5),
        )
    assert info.value.code == "upstream_timeout"
    assert time.monotonic() - started < 3


async def test_connection_refused_is_unreachable(registry: ProviderRegistry, closed_port: int) -> None:
    with pytest.raises(ProviderError) as info:
        await collect(
            registry.build_for("ollama", f"http://127.0.0.1:{closed_port}"), request("llama3.2"), FAST
        )
    assert (info.value.code, info.value.status) == ("upstream_unreachable", 502)


async def test_cancelling_the_consumer_closes_the_upstream_at_once(registry: ProviderRegistry) -> None:
    with FakeOllama(reply=" ".join(["word"] * 500), token_delay=0.02) as fake:
        adapter = registry.build_for("ollama", fake.url)
        seen = anyio.Event()
        received: list[Delta] = []

        async def consume() -> None:
            async for event in adapter.stream_chat(request("llama3.2"), FAST):
                received.append(event)  # type: ignore[arg-type]
                if len(received) == 3:
                    seen.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await seen.wait()
            assert fake.active_streams == 1
            tg.cancel_scope.cancel()
        assert await wait_for(lambda: fake.active_streams == 0, timeout=1.0)
        assert fake.disconnects == 1
        assert len(received) < 500


async def test_closing_the_iterator_early_closes_the_upstream(registry: ProviderRegistry) -> None:
    from contextlib import aclosing

    with FakeOllama(reply=" ".join(["word"] * 500), token_delay=0.02) as fake:
        adapter = registry.build_for("ollama", fake.url)
        async with aclosing(adapter.stream_chat(request("llama3.2"), FAST)) as events:
            async for _ in events:
                break
        assert await wait_for(lambda: fake.active_streams == 0, timeout=1.0)


async def test_list_models_with_capabilities_from_show(registry: ProviderRegistry) -> None:
    with FakeOllama() as fake:
        models = await registry.build_for("ollama", fake.url).list_models(timeout=2)
    by_name = {m.name: m for m in models}
    assert set(by_name) == {"llama3.2:latest", "qwen3:0.6b", "nomic-embed-text:latest"}
    assert "thinking" in by_name["qwen3:0.6b"].capabilities
    assert by_name["nomic-embed-text:latest"].capabilities == ("embedding",)
    assert by_name["llama3.2:latest"].details["family"] == "llama"


async def test_list_models_down_and_hanging(registry: ProviderRegistry, closed_port: int) -> None:
    with pytest.raises(ProviderError) as info:
        await registry.build_for("ollama", f"http://127.0.0.1:{closed_port}").list_models(timeout=1)
    assert info.value.code == "upstream_unreachable"
    with FakeOllama(hang=True) as fake:
        started = time.monotonic()
        with pytest.raises(ProviderError) as info:
            await registry.build_for("ollama", fake.url).list_models(timeout=0.3)
        assert info.value.code == "upstream_timeout"
        assert time.monotonic() - started < 2
        fake.hang = False


async def test_blocked_addresses_are_refused_at_connect_time(registry: ProviderRegistry) -> None:
    for url in ("http://169.254.169.254", "http://0.0.0.0:11434", "http://[fe80::1]:11434"):
        with pytest.raises(ProviderError) as info:
            await registry.build_for("ollama", url).list_models(timeout=1)
        assert info.value.code == "upstream_unreachable"
        assert "refused to connect" in info.value.message


async def test_done_line_checks_error_first() -> None:
    from server.providers.ollama import done_event

    done = done_event({"done": True, "done_reason": "length", "eval_count": 3, "eval_duration": 2_000_000})
    assert done == Done(done_reason="length", usage={"completion_tokens": 3}, timings={"generate_ms": 2.0})


async def test_host_names_are_resolved_checked_and_tried_in_turn(registry: ProviderRegistry) -> None:
    # "localhost" may resolve to ::1 first, where the fake does not listen: the next address is tried.
    with FakeOllama() as fake:
        port = fake.url.rsplit(":", 1)[1]
        models = await registry.build_for("ollama", f"http://localhost:{port}").list_models(timeout=2)
    assert "llama3.2:latest" in {m.name for m in models}
