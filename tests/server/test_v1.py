"""The OpenAI-compatible /v1 API, driven by the official ``openai`` client (sync over the in-process
app, async over a real uvicorn) against the fake Ollama and the fake OpenAI upstream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.fakes import FakeOllama, FakeOpenAI
from tests.server.chat_support import live_server, wait_for
from tests.server.conftest import BASE_URL, bearer

REPLY = "Hello from the fake."
PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama(reply=REPLY) as fake:
        yield fake


@pytest.fixture
def settings(make_settings: Callable[..., Settings], fake_ollama: FakeOllama) -> Settings:
    return make_settings(ollama_url=fake_ollama.url, models_discovery_timeout=2)


def make_key(client: TestClient, token: str, **body) -> str:
    r = client.post("/api/keys", json={"name": f"k-{uuid.uuid4().hex[:6]}", **body}, headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json()["key"]


@pytest.fixture
def key(client: TestClient, user_token: str) -> str:
    return make_key(client, user_token)


def sdk(client: TestClient, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=key, http_client=client, max_retries=0)


def add_openai_provider(client: TestClient, admin_token: str, fake: FakeOpenAI, name: str) -> dict:
    body = {"name": name, "kind": "openai", "base_url": fake.url, "api_key": "sk-test"}
    r = client.post("/api/providers", json=body, headers=bearer(admin_token))
    assert r.status_code == 201, r.text
    return r.json()


# --- models -------------------------------------------------------------------------------------------


def test_models_list_default_ollama_names_and_presets(client: TestClient, admin_token: str, key: str) -> None:
    ids = [m.id for m in sdk(client, key).models.list()]
    assert {"llama3.2:latest", "qwen3:0.6b", "nomic-embed-text:latest"} <= set(ids)
    model = sdk(client, key).models.retrieve("llama3.2:latest")
    assert model.id == "llama3.2:latest" and model.object == "model" and model.owned_by == "Ollama (local)"


def test_models_of_other_providers_carry_the_provider_slug(
    client: TestClient, admin_token: str, key: str
) -> None:
    with FakeOpenAI() as upstream:
        add_openai_provider(client, admin_token, upstream, "Work GPU #2")
        ids = {m.id for m in sdk(client, key).models.list()}
        assert {"work-gpu-2/gpt-4o-mini", "work-gpu-2/gpt-4o"} <= ids
        answer = sdk(client, key).chat.completions.create(
            model="work-gpu-2/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content
        assert answer.model == "work-gpu-2/gpt-4o-mini"


def test_unknown_model_is_404_model_not_found(client: TestClient, key: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(client, key).models.retrieve("nope:latest")
    assert caught.value.code == "model_not_found"
    r = client.post(
        "/v1/chat/completions",
        json={"model": "nope/x", "messages": [{"role": "user", "content": "hi"}]},
        headers=bearer(key),
    )
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "code", "param"}


def test_a_key_sees_only_its_models(client: TestClient, user_token: str) -> None:
    narrow = make_key(client, user_token, models=["qwen3:*"])
    assert [m.id for m in sdk(client, narrow).models.list()] == ["qwen3:0.6b"]
    with pytest.raises(openai.NotFoundError):
        sdk(client, narrow).chat.completions.create(
            model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}]
        )


# --- chat ---------------------------------------------------------------------------------------------


def test_chat_not_streamed(client: TestClient, key: str) -> None:
    answer = sdk(client, key).chat.completions.create(
        model="llama3.2:latest",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.2,
        max_tokens=100,
        seed=1,
        stop=["zzz"],
        extra_body={"an_unknown_field": 1},
    )
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.choices[0].message.content == REPLY
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_chat_streamed_with_usage(client: TestClient, key: str) -> None:
    stream = sdk(client, key).chat.completions.create(
        model="llama3.2:latest",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_wire_format_ends_with_done(client: TestClient, key: str) -> None:
    body = {"model": "llama3.2:latest", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=bearer(key)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_length_finish_reason(client: TestClient, key: str) -> None:
    answer = sdk(client, key).chat.completions.create(
        model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=2
    )
    assert answer.choices[0].finish_reason == "length"


def test_preset_system_prompt_and_defaults_apply_under_the_request(
    client: TestClient, admin_token: str, user_token: str, fake_ollama: FakeOllama
) -> None:
    provider = client.get("/api/providers", headers=bearer(admin_token)).json()["items"][0]
    r = client.post(
        "/api/model-configs",
        json={
            "name": "Pirate",
            "provider_id": provider["id"],
            "model": "llama3.2:latest",
            "system_prompt": "Talk like a pirate.",
            "max_tokens": 2,
        },
        headers=bearer(admin_token),
    )
    assert r.status_code == 201, r.text
    seen: list[list[dict]] = []
    fake_ollama.reply = lambda messages: seen.append(messages) or REPLY
    key = make_key(client, user_token)
    assert "Pirate" in {m.id for m in sdk(client, key).models.list()}
    answer = sdk(client, key).chat.completions.create(
        model="Pirate", messages=[{"role": "user", "content": "a"}]
    )
    assert answer.choices[0].finish_reason == "length"  # the preset's max_tokens
    assert seen[-1][0] == {"role": "system", "content": "Talk like a pirate."}
    answer = sdk(client, key).chat.completions.create(
        model="Pirate",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"}],
        max_tokens=100,
    )
    assert answer.choices[0].finish_reason == "stop"  # the request's own value wins
    assert [m["content"] for m in seen[-1] if m["role"] == "system"] == ["Be brief."]


def test_openai_upstream_streams_through(client: TestClient, admin_token: str, key: str) -> None:
    with FakeOpenAI(reply="Upstream says hi.") as upstream:
        add_openai_provider(client, admin_token, upstream, "cloud")
        stream = sdk(client, key).chat.completions.create(
            model="cloud/gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
            response_format={"type": "json_object"},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Upstream says hi."
        assert chunks[-1].usage is not None


def test_tool_calls_pass_through_both_ways(client: TestClient, key: str, fake_ollama: FakeOllama) -> None:
    fake_ollama.tool_calls = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    fake_ollama.reply = ""
    client_sdk = sdk(client, key)
    question = {"role": "user", "content": "Weather in Paris?"}
    answer = client_sdk.chat.completions.create(model="llama3.2:latest", messages=[question], tools=[WEATHER])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}

    chunks = list(
        client_sdk.chat.completions.create(
            model="llama3.2:latest", messages=[question], tools=[WEATHER], stream=True
        )
    )
    streamed = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.index, tc.function.name if tc.function else None) for tc in streamed] == [(0, "get_weather")]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"

    # The call and its result go back up: Ollama's arguments as an object, the answer named after the call.
    seen: list[list[dict]] = []
    fake_ollama.tool_calls = None
    fake_ollama.reply = lambda messages: seen.append(messages) or "It is sunny."
    answer = client_sdk.chat.completions.create(
        model="llama3.2:latest",
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'},
        ],
    )
    assert answer.choices[0].message.content == "It is sunny."
    upstream = seen[-1]
    assert upstream[1]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert upstream[2] == {"role": "tool", "content": '{"sky": "sunny"}', "tool_name": "get_weather"}


def test_images_reach_a_vision_model(client: TestClient, key: str, fake_ollama: FakeOllama) -> None:
    model = fake_ollama.models["llama3.2:latest"]
    fake_ollama.models["llama3.2:latest"] = dataclasses.replace(
        model, capabilities=(*model.capabilities, "vision")
    )
    seen: list[list[dict]] = []
    fake_ollama.reply = lambda messages: seen.append(messages) or "A pixel."
    answer = sdk(client, key).chat.completions.create(
        model="llama3.2:latest",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": PIXEL}},
                ],
            }
        ],
    )
    assert answer.choices[0].message.content == "A pixel."
    assert seen[-1][0]["content"] == "What is this?"
    assert seen[-1][0]["images"] == [PIXEL.split(",", 1)[1]]


# --- embeddings ---------------------------------------------------------------------------------------


def test_embeddings_float_and_base64(client: TestClient, key: str) -> None:
    client_sdk = sdk(client, key)
    result = client_sdk.embeddings.create(model="nomic-embed-text:latest", input=["one", "two"])  # base64
    assert len(result.data) == 2 and len(result.data[0].embedding) == 768
    plain = client_sdk.embeddings.create(
        model="nomic-embed-text:latest", input="one", encoding_format="float"
    )
    assert plain.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)
    assert plain.usage.prompt_tokens > 0


# --- errors -------------------------------------------------------------------------------------------


def test_authentication_errors(client: TestClient, user_token: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(client, "mt-not-a-key").models.list()
    r = client.get("/v1/models", headers=bearer(user_token))  # a UI token never opens /v1
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "code", "param"}
    assert r.json()["error"]["type"] == "authentication_error"
    r = client.get("/v1/models")
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "llama3.2:latest", "messages": []}, "messages"),
        (
            {"model": "llama3.2:latest", "messages": [{"role": "user", "content": "x"}], "temperature": 9},
            "temperature",
        ),
        ({"model": "llama3.2:latest", "messages": [{"role": "wizard", "content": "x"}]}, "messages.[0].role"),
        (
            {
                "model": "llama3.2:latest",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            },
            "messages.[0].content",
        ),
        (
            {
                "model": "llama3.2:latest",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PIXEL}}]}
                ],
            },
            "messages",  # llama3.2 has no vision capability
        ),
        (
            {"model": "llama3.2:latest", "messages": [{"role": "tool", "content": "42"}]},
            "messages.[0].tool_call_id",
        ),
        (
            {
                "model": "llama3.2:latest",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {}}],
            },
            "tools",
        ),
        (
            {
                "model": "llama3.2:latest",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "xml"},
            },
            "response_format",
        ),
        (
            {
                "model": "llama3.2:latest",
                "messages": [{"role": "user", "content": "x"}],
                "stop": ["a", "b", "c", "d", "e"],
            },
            "stop",
        ),
    ],
)
def test_bad_requests_are_400_in_openai_shape(client: TestClient, key: str, body: dict, param: str) -> None:
    r = client.post("/v1/chat/completions", json=body, headers=bearer(key))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_bad_request_through_the_sdk(client: TestClient, key: str) -> None:
    with pytest.raises(openai.BadRequestError):
        sdk(client, key).chat.completions.create(
            model="llama3.2:latest", messages=[{"role": "user", "content": "x"}], top_p=5
        )
    with pytest.raises(openai.BadRequestError):
        sdk(client, key).embeddings.create(model="nomic-embed-text:latest", input=[""])


def test_body_too_large_is_413(client: TestClient, key: str, settings: Settings) -> None:
    big = "x" * (settings.max_body_bytes + 10)
    r = client.post(
        "/v1/chat/completions",
        json={"model": "llama3.2:latest", "messages": [{"role": "user", "content": big}]},
        headers=bearer(key),
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


def test_host_allow_list_holds_and_no_origin_is_needed(client: TestClient, key: str) -> None:
    r = client.get("/v1/models", headers={**bearer(key), "Host": "evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed"
    # A program sends no Origin and no cookie: the key is enough.
    r = client.post(
        "/v1/chat/completions",
        json={"model": "llama3.2:latest", "messages": [{"role": "user", "content": "hi"}]},
        headers=bearer(key),
    )
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"


def test_upstream_errors_map_to_502_429_and_404(
    client: TestClient, key: str, fake_ollama: FakeOllama
) -> None:
    fake_ollama.busy = True
    r = client.post(
        "/v1/chat/completions",
        json={"model": "llama3.2:latest", "messages": [{"role": "user", "content": "x"}]},
        headers=bearer(key),
    )
    assert r.status_code in (502, 503) and r.json()["error"]["type"] == "api_error"
    fake_ollama.busy = False
    with pytest.raises(openai.NotFoundError):
        sdk(client, key).chat.completions.create(
            model="missing:latest", messages=[{"role": "user", "content": "x"}]
        )


def test_upstream_timeout_is_504(app: FastAPI, client: TestClient, key: str, fake_ollama: FakeOllama) -> None:
    runtime = app.state.runtime
    runtime.settings = runtime.settings.model_copy(update={"chat_first_token_timeout": 0.3})
    fake_ollama.hang = True
    try:
        r = client.post(
            "/v1/chat/completions",
            json={"model": "llama3.2:latest", "messages": [{"role": "user", "content": "x"}]},
            headers=bearer(key),
        )
    finally:
        fake_ollama.hang = False
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


def test_upstream_rate_limit_is_429_with_retry_after(client: TestClient, admin_token: str, key: str) -> None:
    with FakeOpenAI(rate_limited=True, retry_after=7) as upstream:
        add_openai_provider(client, admin_token, upstream, "limited")
        with pytest.raises(openai.RateLimitError) as caught:
            sdk(client, key).chat.completions.create(
                model="limited/gpt-4o", messages=[{"role": "user", "content": "x"}]
            )
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["type"] == "rate_limit_error"  # type: ignore[index]


def test_unknown_v1_path_is_an_openai_404(client: TestClient, key: str) -> None:
    r = client.get("/v1/nothing-here", headers=bearer(key))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_api_errors_keep_their_shape(client: TestClient) -> None:
    r = client.get("/api/users/me")
    assert r.status_code == 401 and "code" in r.json() and "error" not in r.json()


# --- async client over a real server; disconnects -----------------------------------------------------


def test_async_client_streamed_and_not(app: FastAPI, client: TestClient, key: str) -> None:
    with live_server(app) as live:

        async def run() -> tuple[str, str]:
            async with openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0) as aclient:
                whole = await aclient.chat.completions.create(
                    model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}]
                )
                stream = await aclient.chat.completions.create(
                    model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
                return whole.choices[0].message.content or "", "".join(parts)

        whole, streamed = asyncio.run(run())
    assert whole == REPLY and streamed == REPLY


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_the_upstream(
    app: FastAPI, client: TestClient, key: str, fake_ollama: FakeOllama, stream: bool
) -> None:
    fake_ollama.token_delay = 0.2
    fake_ollama.reply = "word " * 200
    with live_server(app) as live:
        body = {"model": "llama3.2:latest", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        with httpx.Client(timeout=10) as http:
            if stream:
                with http.stream(
                    "POST", f"{live.url}/v1/chat/completions", json=body, headers=bearer(key)
                ) as r:
                    assert r.status_code == 200
                    next(r.iter_lines())
            else:
                with pytest.raises(httpx.ReadTimeout):
                    http.post(f"{live.url}/v1/chat/completions", json=body, headers=bearer(key), timeout=1.0)
        assert wait_for(lambda: fake_ollama.disconnects >= 1, timeout=5)
        assert wait_for(lambda: fake_ollama.active_streams == 0, timeout=5)


def test_usage_hook_gets_one_result_per_request(
    client: TestClient, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.api.v1 import routes as v1_routes

    results: list = []
    monkeypatch.setattr(v1_routes, "usage_recorder", lambda runtime: results.append)
    answer = sdk(client, key).chat.completions.create(
        model="llama3.2:latest", messages=[{"role": "user", "content": "hi"}]
    )
    sdk(client, key).embeddings.create(model="nomic-embed-text:latest", input="one", encoding_format="float")
    assert wait_for(lambda: len(results) == 2)
    chat, embedding = results
    assert (chat.kind, chat.model, chat.outcome) == ("chat", "llama3.2:latest", "complete")
    assert answer.usage is not None and chat.completion_tokens == answer.usage.completion_tokens
    assert chat.key_id is not None and chat.first_token_ms is not None and not chat.estimated
    assert (embedding.kind, embedding.outcome) == ("embedding", "complete") and embedding.prompt_tokens > 0


def test_v1_requests_are_booked_with_usage_accounting(client: TestClient, key: str, admin_token: str) -> None:
    """The real hook: a /v1 chat lands in /api/usage with its key and the upstream's counts."""
    from server.services.usage import recorder

    answer = sdk(client, key).chat.completions.create(
        model="llama3.2:latest", messages=[{"role": "user", "content": "count me"}]
    )
    usage = recorder(client.app.state.runtime)

    def booked() -> list[dict]:
        usage.flush_now()  # the background flush may not have run yet
        r = client.get("/api/usage", params={"granularity": "raw"}, headers=bearer(admin_token))
        assert r.status_code == 200, r.text
        return [i for i in r.json()["items"] if i["model"] == "llama3.2:latest" and i["key_id"] is not None]

    assert wait_for(lambda: bool(booked()))
    rows = booked()
    assert len(rows) == 1
    assert answer.usage is not None and rows[0]["completion_tokens"] == answer.usage.completion_tokens
    assert rows[0]["prompt_tokens"] == answer.usage.prompt_tokens


def test_catalog_changes_apply_to_the_very_next_request(
    client: TestClient, admin_token: str, user_token: str, fake_ollama: FakeOllama
) -> None:
    """Resolutions are reused between requests (services/gateway.py ResolutionCache) but never outlive a
    change to a preset or a provider."""
    provider = client.get("/api/providers", headers=bearer(admin_token)).json()["items"][0]
    body = {
        "name": "Tutor",
        "provider_id": provider["id"],
        "model": "llama3.2:latest",
        "system_prompt": "one",
    }
    r = client.post("/api/model-configs", json=body, headers=bearer(admin_token))
    assert r.status_code == 201, r.text
    config_id = r.json()["id"]
    seen: list[list[dict]] = []
    fake_ollama.reply = lambda messages: seen.append(messages) or REPLY
    api = sdk(client, make_key(client, user_token))

    def ask(model: str = "Tutor") -> str:
        api.chat.completions.create(model=model, messages=[{"role": "user", "content": "a"}])
        return seen[-1][0]["content"]

    assert ask() == "one"
    assert ask() == "one"  # the second request reuses the resolution
    r = client.patch(
        f"/api/model-configs/{config_id}", json={"system_prompt": "two"}, headers=bearer(admin_token)
    )
    assert r.status_code == 200, r.text
    assert ask() == "two"
    assert ask("llama3.2:latest") == "a"
    r = client.patch(f"/api/providers/{provider['id']}", json={"enabled": False}, headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    with pytest.raises(openai.NotFoundError):
        ask("llama3.2:latest")
    with pytest.raises(openai.NotFoundError):
        ask()


def test_ui_chats_are_booked_under_the_v1_model_id(
    client: TestClient, user_token: str, admin_token: str
) -> None:
    """One noun for a model in usage, whichever door: the UI chat's opaque catalog id is booked as /v1 names
    it, for an Ollama model of the default provider and for a remote model."""
    from server.services.usage import recorder

    with FakeOpenAI(reply="Remote.") as upstream:
        add_openai_provider(client, admin_token, upstream, "Work GPU #2")
        catalog = client.get("/api/models", headers=bearer(user_token)).json()["items"]
        by_name = {(m["provider"]["name"], m["model"]): m["id"] for m in catalog}
        for model in (by_name[("Ollama (local)", "llama3.2:latest")], by_name[("Work GPU #2", "gpt-4o")]):
            r = client.post("/api/chat", json={"model": model, "content": "hi"}, headers=bearer(user_token))
            assert r.status_code == 200, r.text
    recorder(client.app.state.runtime).flush_now()
    r = client.get("/api/usage", params={"granularity": "raw"}, headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    assert sorted(i["model"] for i in r.json()["items"]) == ["llama3.2:latest", "work-gpu-2/gpt-4o"]
