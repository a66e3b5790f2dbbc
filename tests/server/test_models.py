"""GET /api/models (configurations + live Ollama discovery) and resolve_model for the chat."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from server.errors import NotFound
from server.providers.base import ChatMessage, ChatRequest, Delta, Done
from server.services import models as models_service
from server.settings import Settings
from tests.fakes import FakeOllama, FakeOpenAI
from tests.server.chat_support import parse_sse
from tests.server.conftest import bearer
from tests.server.memory_keyring import MemoryKeyring


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama(reply="Hello from the fake.") as fake:
        yield fake


@pytest.fixture
def settings(make_settings: Callable[..., Settings], fake_ollama: FakeOllama) -> Settings:
    return make_settings(ollama_url=fake_ollama.url, models_discovery_timeout=0.5)


def default_provider(client: TestClient, admin_token: str) -> dict:
    return client.get("/api/providers", headers=bearer(admin_token)).json()["items"][0]


def add_provider(client: TestClient, admin_token: str, **body) -> dict:
    body.setdefault("name", f"p-{uuid.uuid4().hex[:6]}")
    body.setdefault("kind", "ollama")
    r = client.post("/api/providers", json=body, headers=bearer(admin_token))
    assert r.status_code == 201, r.text
    return r.json()


def add_config(client: TestClient, admin_token: str, **body) -> dict:
    r = client.post("/api/model-configs", json=body, headers=bearer(admin_token))
    assert r.status_code == 201, r.text
    return r.json()


def models(client: TestClient, token: str) -> dict:
    r = client.get("/api/models", headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


def tags_requests(fake: FakeOllama) -> int:
    return sum(1 for method, path in fake.requests if path == "/api/tags")


def test_lists_discovered_ollama_models_for_any_user(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    provider = default_provider(client, admin_token)
    body = models(client, user_token)
    assert body["errors"] == []
    by_model = {m["model"]: m for m in body["items"]}
    assert set(by_model) == {"llama3.2:latest", "qwen3:0.6b"}  # the embedding-only model is left out
    qwen = by_model["qwen3:0.6b"]
    assert qwen["id"] == f"ollama:{provider['id']}:qwen3:0.6b"
    assert qwen["source"] == "ollama" and qwen["name"] == "qwen3:0.6b"
    assert qwen["provider"] == {"id": provider["id"], "name": "Ollama (local)", "kind": "ollama"}
    assert "thinking" in qwen["capabilities"]
    assert qwen["defaults"] == {
        "system_prompt": "",
        "temperature": None,
        "top_p": None,
        "context_length": None,
        "max_tokens": None,
        "options": {},
    }


def test_configurations_are_listed_with_their_defaults(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    provider = default_provider(client, admin_token)
    config = add_config(
        client,
        admin_token,
        provider_id=provider["id"],
        name="Thinker",
        model="qwen3:0.6b",
        system_prompt="Think first.",
        temperature=0.3,
        options={"seed": 1},
    )
    add_config(client, admin_token, provider_id=provider["id"], name="Off", model="qwen3:0.6b", enabled=False)
    items = models(client, user_token)["items"]
    configured = [m for m in items if m["source"] == "config"]
    assert len(configured) == 1
    item = configured[0]
    assert item["id"] == f"cfg:{config['id']}"
    assert (item["name"], item["model"]) == ("Thinker", "qwen3:0.6b")
    assert "thinking" in item["capabilities"]  # taken from the live discovery
    assert item["defaults"]["system_prompt"] == "Think first."
    assert (item["defaults"]["temperature"], item["defaults"]["options"]) == (0.3, {"seed": 1})
    assert items[0]["source"] == "config"  # configurations first


def test_a_provider_that_is_down_is_reported_and_the_rest_still_listed(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    with FakeOllama() as gone:
        dead_url = gone.url
    dead = add_provider(client, admin_token, name="Dead box", base_url=dead_url)
    add_config(client, admin_token, provider_id=dead["id"], name="On the dead box", model="llama3.2")
    with FakeOllama(hang=True) as hanging:
        slow = add_provider(client, admin_token, name="Hanging box", base_url=hanging.url)
        started = time.monotonic()
        body = models(client, user_token)
        elapsed = time.monotonic() - started
        hanging.hang = False
    errors = {e["provider_id"]: e for e in body["errors"]}
    assert set(errors) == {dead["id"], slow["id"]}
    assert errors[dead["id"]]["code"] == "upstream_unreachable"
    assert errors[slow["id"]]["code"] == "upstream_timeout"
    assert errors[dead["id"]]["provider"] == {"id": dead["id"], "name": "Dead box", "kind": "ollama"}
    assert elapsed < 3  # concurrently, each bounded by the discovery timeout (0.5 s)
    assert {m["model"] for m in body["items"] if m["source"] == "ollama"} == {"llama3.2:latest", "qwen3:0.6b"}
    assert any(m["name"] == "On the dead box" for m in body["items"])


def test_discovery_is_cached_for_a_few_seconds(
    client: TestClient, admin_token: str, user_token: str, fake_ollama: FakeOllama
) -> None:
    models(client, user_token)
    models(client, admin_token)
    assert tags_requests(fake_ollama) == 1
    client.app.state.runtime.model_discovery.forget()
    models(client, user_token)
    assert tags_requests(fake_ollama) == 2


def test_disabled_providers_are_not_asked(
    client: TestClient, admin_token: str, user_token: str, fake_ollama: FakeOllama
) -> None:
    provider = default_provider(client, admin_token)
    client.patch(f"/api/providers/{provider['id']}", json={"enabled": False}, headers=bearer(admin_token))
    assert models(client, user_token) == {"items": [], "errors": []}
    assert tags_requests(fake_ollama) == 0


def test_requires_sign_in(client: TestClient) -> None:
    assert client.get("/api/models").status_code == 401


# --- ids and resolve_model -------------------------------------------------------------------------


def test_ids_round_trip_and_encode_slashes() -> None:
    pid = uuid.uuid4()
    plain = models_service.ollama_model_id(pid, "qwen3:0.6b")
    assert plain == f"ollama:{pid}:qwen3:0.6b"
    slashed = models_service.ollama_model_id(pid, "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M")
    assert "/" not in slashed and slashed.startswith(f"ollama:{pid}:~")
    for model_id, name in (
        (plain, "qwen3:0.6b"),
        (slashed, "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"),
    ):
        assert models_service.parse_model_id(model_id) == ("ollama", pid, name)
    cid = uuid.uuid4()
    assert models_service.parse_model_id(f"cfg:{cid}") == ("cfg", cid, None)
    for bad in (
        "",
        "cfg:",
        "cfg:nope",
        f"ollama:{pid}",
        f"ollama:{pid}:../x",
        f"ollama:{pid}:~!!",
        "gpt-4o",
        "ollama:nope:llama3.2",
        "x" * 2000,
    ):
        with pytest.raises(NotFound) as info:
            models_service.parse_model_id(bad)
        assert info.value.code == "model_not_found"


def resolve(client: TestClient, model_id: str) -> models_service.ResolvedModel:
    runtime = client.app.state.runtime
    with runtime.session_factory() as session:
        return models_service.resolve_model(session, runtime, model_id, user_id=None)


def stream(client: TestClient, resolved: models_service.ResolvedModel, text: str = "hi") -> list:
    request = ChatRequest(
        model=resolved.upstream_model,
        messages=[ChatMessage("user", text)],
        options=resolved.defaults["options"],
    )

    async def run() -> list:
        return [event async for event in resolved.adapter.stream_chat(request)]

    return client.portal.call(run)  # the app's own event loop, where its HTTP client lives


def test_resolve_discovered_model_and_stream_from_it(client: TestClient, admin_token: str) -> None:
    provider = default_provider(client, admin_token)
    resolved = resolve(client, f"ollama:{provider['id']}:llama3.2:latest")
    assert resolved.upstream_model == "llama3.2:latest"
    assert resolved.defaults == {"system_prompt": "", "options": {}}
    assert resolved.provider.name == "Ollama (local)" and resolved.adapter.kind == "ollama"
    events = stream(client, resolved)
    assert "".join(e.content for e in events if isinstance(e, Delta)) == "Hello from the fake."
    assert isinstance(events[-1], Done)


def test_resolve_configuration(client: TestClient, admin_token: str) -> None:
    provider = default_provider(client, admin_token)
    config = add_config(
        client,
        admin_token,
        provider_id=provider["id"],
        name="Short",
        model="llama3.2",
        system_prompt="Be brief.",
        max_tokens=2,
        context_length=2048,
        options={"seed": 3},
    )
    resolved = resolve(client, f"cfg:{config['id']}")
    assert (resolved.upstream_model, resolved.name, resolved.model_id) == (
        "llama3.2",
        "Short",
        f"cfg:{config['id']}",
    )
    assert resolved.defaults == {
        "system_prompt": "Be brief.",
        "options": {"seed": 3, "max_tokens": 2, "context_length": 2048},
    }
    events = stream(client, resolved)
    assert "".join(e.content for e in events if isinstance(e, Delta)) == "Hello from"  # max_tokens honoured
    assert events[-1].done_reason == "length"


def test_resolve_openai_configuration_uses_the_key_from_the_keyring(
    client: TestClient, admin_token: str, memory_keyring: MemoryKeyring
) -> None:
    with FakeOpenAI(api_key="sk-test-key-1234567890", reply="Remote answer.") as fake:
        p = add_provider(
            client, admin_token, kind="openai", base_url=fake.url, api_key="sk-test-key-1234567890"
        )
        config = add_config(client, admin_token, provider_id=p["id"], name="Mini", model="gpt-4o-mini")
        resolved = resolve(client, f"cfg:{config['id']}")
        assert resolved.adapter.kind == "openai"
        events = stream(client, resolved)
    assert "".join(e.content for e in events if isinstance(e, Delta)) == "Remote answer."


def test_unknown_and_disabled_models_are_not_found(client: TestClient, admin_token: str) -> None:
    provider = default_provider(client, admin_token)
    config = add_config(client, admin_token, provider_id=provider["id"], name="Later off", model="llama3.2")
    openai = add_provider(client, admin_token, kind="openai", base_url="http://127.0.0.1:1/v1")
    missing = [
        f"cfg:{uuid.uuid4()}",
        f"ollama:{uuid.uuid4()}:llama3.2",
        f"ollama:{openai['id']}:llama3.2",  # discovered ids only exist for Ollama providers
        "not-an-id",
    ]
    for model_id in missing:
        with pytest.raises(NotFound) as info:
            resolve(client, model_id)
        assert info.value.code == "model_not_found"
    client.patch(f"/api/model-configs/{config['id']}", json={"enabled": False}, headers=bearer(admin_token))
    with pytest.raises(NotFound):
        resolve(client, f"cfg:{config['id']}")
    client.patch(f"/api/model-configs/{config['id']}", json={"enabled": True}, headers=bearer(admin_token))
    resolve(client, f"cfg:{config['id']}")
    client.patch(f"/api/providers/{provider['id']}", json={"enabled": False}, headers=bearer(admin_token))
    for model_id in (f"cfg:{config['id']}", f"ollama:{provider['id']}:llama3.2"):
        with pytest.raises(NotFound):
            resolve(client, model_id)


# --- OpenAI-compatible providers list their own models (GET /v1/models) ---------------------------

KEY = "sk-remote-key-1234567890"


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(
        api_key=KEY, reply="Remote answer.", models=("gpt-4o-mini", "gpt-4o", "meta-llama/Llama-3.1-8B")
    ) as fake:
        yield fake


def models_requests(fake: FakeOpenAI) -> int:
    return sum(1 for method, path in fake.requests if path == "/v1/models")


def test_an_openai_provider_with_a_key_lists_its_models(
    client: TestClient,
    admin_token: str,
    user_token: str,
    memory_keyring: MemoryKeyring,
    fake_openai: FakeOpenAI,
) -> None:
    p = add_provider(client, admin_token, name="Remote", kind="openai", base_url=fake_openai.url, api_key=KEY)
    assert p["model_allowlist"] == []
    body = models(client, user_token)
    assert body["errors"] == []
    remote = {m["model"]: m for m in body["items"] if m["source"] == "openai"}
    assert set(remote) == {"gpt-4o-mini", "gpt-4o", "meta-llama/Llama-3.1-8B"}
    mini = remote["gpt-4o-mini"]
    assert mini["id"] == f"openai:{p['id']}:gpt-4o-mini"
    assert mini["provider"] == {"id": p["id"], "name": "Remote", "kind": "openai"}
    assert mini["name"] == "gpt-4o-mini" and mini["capabilities"] == ["completion"]
    slashed = remote["meta-llama/Llama-3.1-8B"]["id"]
    assert "/" not in slashed and slashed.startswith(f"openai:{p['id']}:~")
    assert models_service.parse_model_id(slashed) == ("openai", uuid.UUID(p["id"]), "meta-llama/Llama-3.1-8B")
    # Ollama's models are still there, and the list is cached like Ollama's.
    assert {m["model"] for m in body["items"] if m["source"] == "ollama"} == {"llama3.2:latest", "qwen3:0.6b"}
    models(client, admin_token)
    assert models_requests(fake_openai) == 1


def test_the_allow_list_narrows_what_an_openai_provider_offers(
    client: TestClient,
    admin_token: str,
    user_token: str,
    memory_keyring: MemoryKeyring,
    fake_openai: FakeOpenAI,
) -> None:
    p = add_provider(
        client,
        admin_token,
        kind="openai",
        base_url=fake_openai.url,
        api_key=KEY,
        model_allowlist=[" gpt-4o ", "gpt-4o", "", "not-listed-upstream"],
    )
    assert p["model_allowlist"] == ["gpt-4o", "not-listed-upstream"]  # trimmed, blanks and repeats dropped
    assert [m["model"] for m in models(client, user_token)["items"] if m["source"] == "openai"] == ["gpt-4o"]
    with pytest.raises(NotFound):
        resolve(client, f"openai:{p['id']}:gpt-4o-mini")  # listed upstream but not offered
    r = client.patch(f"/api/providers/{p['id']}", json={"model_allowlist": []}, headers=bearer(admin_token))
    assert r.status_code == 200 and r.json()["model_allowlist"] == []
    offered = [m["model"] for m in models(client, user_token)["items"] if m["source"] == "openai"]
    assert len(offered) == 3
    resolve(client, f"openai:{p['id']}:gpt-4o-mini")


def test_only_openai_providers_take_an_allow_list(client: TestClient, admin_token: str) -> None:
    provider = default_provider(client, admin_token)
    r = client.patch(
        f"/api/providers/{provider['id']}",
        json={"model_allowlist": ["llama3.2"]},
        headers=bearer(admin_token),
    )
    assert r.status_code == 422 and r.json()["code"] == "allowlist_not_supported"
    r = client.post(
        "/api/providers",
        json={
            "name": "x",
            "kind": "openai",
            "base_url": "http://127.0.0.1:1/v1",
            "model_allowlist": ["a\nb"],
        },
        headers=bearer(admin_token),
    )
    assert r.status_code == 422


def test_a_down_or_refusing_openai_provider_is_reported_by_name_and_the_rest_still_listed(
    client: TestClient,
    admin_token: str,
    user_token: str,
    memory_keyring: MemoryKeyring,
    fake_openai: FakeOpenAI,
) -> None:
    good = add_provider(
        client, admin_token, name="Good", kind="openai", base_url=fake_openai.url, api_key=KEY
    )
    with FakeOpenAI() as gone:
        dead_url = gone.url
    dead = add_provider(client, admin_token, name="Gone", kind="openai", base_url=dead_url, api_key=KEY)
    wrong = add_provider(
        client,
        admin_token,
        name="Wrong key",
        kind="openai",
        base_url=fake_openai.url,
        api_key="sk-wrong-key-000000",
    )
    body = models(client, user_token)
    errors = {e["provider"]["name"]: e for e in body["errors"]}
    assert set(errors) == {"Gone", "Wrong key"}
    assert errors["Gone"]["code"] == "upstream_unreachable"
    assert errors["Gone"]["provider"] == {"id": dead["id"], "name": "Gone", "kind": "openai"}
    assert errors["Wrong key"]["provider_id"] == wrong["id"]
    assert "sk-wrong-key" not in errors["Wrong key"]["message"]  # the key never comes back
    listed = {(m["provider"]["name"], m["model"]) for m in body["items"]}
    assert ("Good", "gpt-4o") in listed and ("Ollama (local)", "qwen3:0.6b") in listed
    assert good["id"] not in {e["provider_id"] for e in body["errors"]}


def test_a_new_key_asks_the_upstream_again(
    client: TestClient,
    admin_token: str,
    user_token: str,
    memory_keyring: MemoryKeyring,
    fake_openai: FakeOpenAI,
) -> None:
    p = add_provider(
        client, admin_token, kind="openai", base_url=fake_openai.url, api_key="sk-wrong-key-000000"
    )
    assert [e["code"] for e in models(client, user_token)["errors"]] == ["upstream_auth"]
    client.patch(f"/api/providers/{p['id']}", json={"api_key": KEY}, headers=bearer(admin_token))
    body = models(client, user_token)
    assert body["errors"] == [] and any(m["source"] == "openai" for m in body["items"])


def test_a_chat_with_a_listed_openai_model_streams(
    client: TestClient,
    admin_token: str,
    user_token: str,
    memory_keyring: MemoryKeyring,
    fake_openai: FakeOpenAI,
) -> None:
    add_provider(client, admin_token, kind="openai", base_url=fake_openai.url, api_key=KEY)
    fake_openai.strict_models = True  # the upstream must be asked for the model by its own id
    model = next(m for m in models(client, user_token)["items"] if m["model"] == "meta-llama/Llama-3.1-8B")
    r = client.post("/api/chat", json={"model": model["id"], "content": "hi"}, headers=bearer(user_token))
    assert r.status_code == 200, r.text
    events, _ = parse_sse(r.text)
    assert events[0].event == "meta"
    done = next(e.data for e in events if e.event == "done")
    assert done["message"]["content"] == "Remote answer." and done["message"]["status"] == "complete"
    assert ("POST", "/v1/chat/completions") in fake_openai.requests


def test_capability_lists_the_models_that_have_it(
    client: TestClient, admin_token: str, user_token: str, memory_keyring: MemoryKeyring
) -> None:
    with FakeOpenAI(api_key=KEY, models=("gpt-4o-mini", "text-embedding-3-small")) as remote:
        p = add_provider(client, admin_token, name="Remote", kind="openai", base_url=remote.url, api_key=KEY)
        r = client.get("/api/models", params={"capability": "embedding"}, headers=bearer(user_token))
        assert r.status_code == 200, r.text
        embedders = {(m["source"], m["model"]): m for m in r.json()["items"]}
        assert set(embedders) == {("ollama", "nomic-embed-text:latest"), ("openai", "text-embedding-3-small")}
        assert (
            embedders[("openai", "text-embedding-3-small")]["id"]
            == f"openai:{p['id']}:text-embedding-3-small"
        )
        # Without it: what one can chat with, embedding models left out.
        chat = {m["model"] for m in models(client, user_token)["items"]}
        assert chat == {"llama3.2:latest", "qwen3:0.6b", "gpt-4o-mini"}
        vision = client.get("/api/models", params={"capability": "vision"}, headers=bearer(user_token)).json()
        assert all("vision" in m["capabilities"] for m in vision["items"])
    bad = client.get("/api/models", params={"capability": "telepathy"}, headers=bearer(user_token))
    assert bad.status_code == 422 and bad.json()["code"]
