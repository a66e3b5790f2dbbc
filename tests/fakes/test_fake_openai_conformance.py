"""The fake OpenAI-compatible server speaks docs/protocols.md, §E well enough for the official SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.fakes import FakeOpenAI, wait_until
from tests.fakes.fake_openai import HUGE_CHUNK_BYTES

KEY = "sk-test-0123456789"
REPLY = "Hello there, this is a fixed reply."
USER = [{"role": "user", "content": "Hi!"}]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY, reply=REPLY) as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.url, api_key=KEY, max_retries=0, timeout=10) as official:
        yield official


def sse_events(body: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, one per event."""
    return [block[len("data: ") :] for block in body.split("\n\n") if block.startswith("data: ")]


def post_chat(fake: FakeOpenAI, **extra: object) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": USER, **extra}
    return httpx.post(
        f"{fake.url}/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=10
    )


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]
    assert client.models.retrieve("gpt-4o").owned_by == "system"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_chat_not_streamed(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", REPLY, "stop")
    assert completion.usage.completion_tokens == 7
    limited = client.chat.completions.create(model="gpt-4o-mini", messages=USER, max_tokens=2)
    assert limited.choices[0].message.content == "Hello there,"
    assert limited.choices[0].finish_reason == "length"


def test_chat_streamed(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    *content, finish, usage = chunks
    assert "".join(c.choices[0].delta.content for c in content) == REPLY
    assert all(c.choices[0].finish_reason is None for c in content)
    assert finish.choices[0].finish_reason == "stop" and finish.choices[0].delta.content is None
    assert usage.choices == [] and usage.usage.total_tokens == usage.usage.prompt_tokens + 7
    assert len({c.id for c in chunks}) == 1


def test_sse_wire_format(fake: FakeOpenAI) -> None:
    answer = post_chat(fake, stream=True)
    assert answer.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert answer.text.endswith("data: [DONE]\n\n")
    events = sse_events(answer.text)
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])  # only with include_usage


def test_authentication(fake: FakeOpenAI) -> None:
    with openai.OpenAI(base_url=fake.url, api_key="sk-wrong-key-123", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as error:
            wrong.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert error.value.status_code == 401 and error.value.code == "invalid_api_key"
    assert "sk-wrong-key-123" not in error.value.message  # the key is masked
    missing = httpx.get(f"{fake.url}/models")
    assert missing.status_code == 401
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}


def test_rate_limit_and_server_error(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.rate_limited, fake.retry_after = True, 7
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.code == "rate_limit_exceeded"
    fake.rate_limited, fake.server_error = False, True
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)


def test_bad_requests(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert error.value.message.endswith("[] is too short - 'messages'")
    fake.strict_models = True
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-5-imaginary", messages=USER)


def test_midstream_error_event(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.fail_after_chunks = 3
    received = []
    with pytest.raises(openai.APIError):
        # extend() keeps the chunks that came before the error
        received.extend(client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True))
    assert len(received) == 4  # role chunk + 3 content chunks
    assert '"error":{' in sse_events(post_chat(fake, stream=True).text)[-1]
    fake.fail_after_chunks = 0  # before the first byte: a real HTTP error
    with pytest.raises(openai.InternalServerError):
        list(client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True))


def test_client_disconnect_stops_stream(fake: FakeOpenAI) -> None:
    fake.token_delay = 0.05
    body = {"model": "gpt-4o-mini", "messages": USER, "stream": True}
    with httpx.Client(timeout=10) as http:
        with http.stream(
            "POST", f"{fake.url}/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
        ) as response:
            lines = response.iter_lines()  # keep a reference: a discarded iterator closes the connection
            next(lines)
            assert fake.active_streams == 1
    assert wait_until(lambda: fake.active_streams == 0)
    assert fake.disconnects == 1


def test_hostile_modes(fake: FakeOpenAI) -> None:
    def stream(mode: str) -> tuple[httpx.Response, list[str]]:
        fake.hostile = mode
        answer = post_chat(fake, stream=True)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        return answer, sse_events(answer.text)

    _, events = stream("bad_json")
    with pytest.raises(json.JSONDecodeError):
        [json.loads(e) for e in events[:-1]]
    answer, _ = stream("html")
    assert answer.text.startswith("<!DOCTYPE html>")
    _, events = stream("huge_chunk")
    assert max(len(e) for e in events) > HUGE_CHUNK_BYTES
    answer, _ = stream("unknown_events")
    assert "\nevent: foo\n" in answer.text and "\n: keep-alive\n" in answer.text
    _, events = stream("ansi")
    assert "\x1b[" in "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    answer, _ = stream("set_cookie")
    assert "session=stolen" in answer.headers["set-cookie"]


def test_standalone_module() -> None:
    """`python -m tests.fakes.fake_openai` (what bench/gateway_overhead.py runs) serves the official client,
    with the key and answer length it was given, and ends cleanly on SIGTERM."""
    import signal
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "tests.fakes.fake_openai", "--port", str(port), "--api-key", "sk-cli"]
    command += ["--reply-tokens", "7"]
    server = subprocess.Popen(
        command, cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/models", timeout=1).status_code == 401  # up, and wants the key
            except httpx.TransportError:
                return False

        assert wait_until(ready, 15)
        with openai.OpenAI(base_url=base, api_key="sk-cli") as sdk:
            answer = sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        assert answer.usage is not None and answer.usage.completion_tokens == 7
        assert answer.choices[0].message.content == " ".join(f"word{i}" for i in range(7))
    finally:
        server.send_signal(signal.SIGTERM)
        _, log = server.communicate(timeout=15)
    assert server.returncode == 0
    assert f"fake OpenAI listening on {base}" in log
