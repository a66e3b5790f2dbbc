"""Presets: personal (owned by a user) or shared (admins), in /api/model-configs, the chat catalog and the
chat itself (server/services/model_configs.py, server/services/models.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.fakes import FakeOllama
from tests.server.chat_support import parse_sse
from tests.server.conftest import bearer


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    def reply(messages: list[dict[str, Any]]) -> str:
        system = next((m["content"] for m in messages if m["role"] == "system"), "none")
        return f"system={system} one two three four five six"

    with FakeOllama(reply=reply) as fake:
        yield fake


@pytest.fixture
def settings(make_settings: Callable[..., Settings], fake_ollama: FakeOllama) -> Settings:
    return make_settings(ollama_url=fake_ollama.url, models_discovery_timeout=0.5)


def provider_id(client: TestClient, admin_token: str) -> str:
    return client.get("/api/providers", headers=bearer(admin_token)).json()["items"][0]["id"]


def create(client: TestClient, token: str, **body: Any) -> dict:
    r = client.post("/api/model-configs", json=body, headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json()


def names(client: TestClient, token: str) -> list[tuple[str, bool, bool]]:
    items = client.get("/api/model-configs", headers=bearer(token)).json()["items"]
    return [(c["name"], c["shared"], c["editable"]) for c in items]


def catalog_presets(client: TestClient, token: str) -> list[tuple[str, bool]]:
    r = client.get("/api/models", headers=bearer(token))
    assert r.status_code == 200, r.text
    return [(m["name"], m["shared"]) for m in r.json()["items"] if m["source"] == "config"]


def test_personal_presets_are_private_to_their_owner(
    client: TestClient, admin_token: str, create_user: Callable[..., str]
) -> None:
    alice, bob = create_user("alice@example.com"), create_user("bob@example.com")
    pid = provider_id(client, admin_token)
    mine = create(client, alice, provider_id=pid, name="Coder", model="llama3.2", temperature=0.1)
    assert (mine["shared"], mine["editable"]) == (False, True) and mine["owner_id"] is not None
    create(client, admin_token, provider_id=pid, name="Team", model="llama3.2", shared=True)

    assert names(client, alice) == [("Coder", False, True), ("Team", True, False)]
    assert names(client, bob) == [("Team", True, False)]
    assert names(client, admin_token) == [("Team", True, True)]  # admins do not see personal ones either
    assert catalog_presets(client, alice) == [("Coder", False), ("Team", True)]
    assert catalog_presets(client, bob) == [("Team", True)]

    # Someone else's personal preset does not exist for them (404, not 403), admins included.
    for token in (bob, admin_token):
        for method, path, body in (
            ("PATCH", f"/api/model-configs/{mine['id']}", {"name": "stolen"}),
            ("DELETE", f"/api/model-configs/{mine['id']}", None),
            ("POST", f"/api/model-configs/{mine['id']}/duplicate", None),
        ):
            r = client.request(method, path, json=body, headers=bearer(token))
            assert (r.status_code, r.json()["code"]) == (404, "model_config_not_found"), (method, r.text)

    r = client.patch(
        f"/api/model-configs/{mine['id']}", json={"temperature": None, "top_p": 0.5}, headers=bearer(alice)
    )
    assert r.status_code == 200 and (r.json()["temperature"], r.json()["top_p"]) == (None, 0.5)
    assert client.delete(f"/api/model-configs/{mine['id']}", headers=bearer(alice)).status_code == 204
    assert names(client, alice) == [("Team", True, False)]


def test_names_are_unique_per_owner_and_among_shared_ones(
    client: TestClient, admin_token: str, create_user: Callable[..., str]
) -> None:
    alice, bob = create_user("alice@example.com"), create_user("bob@example.com")
    pid = provider_id(client, admin_token)
    create(client, alice, provider_id=pid, name="Coder", model="llama3.2")
    create(client, bob, provider_id=pid, name="coder", model="llama3.2")  # another user: fine
    create(client, admin_token, provider_id=pid, name="CODER", model="llama3.2", shared=True)  # shared: fine
    for token, shared in ((alice, False), (admin_token, True)):
        r = client.post(
            "/api/model-configs",
            json={"provider_id": pid, "name": "Coder ", "model": "qwen3:0.6b", "shared": shared},
            headers=bearer(token),
        )
        assert (r.status_code, r.json()["code"]) == (409, "model_config_name_taken"), r.text
    other = create(client, alice, provider_id=pid, name="Other", model="llama3.2")
    r = client.patch(f"/api/model-configs/{other['id']}", json={"name": "CoDeR"}, headers=bearer(alice))
    assert (r.status_code, r.json()["code"]) == (409, "model_config_name_taken")


def test_duplicate_makes_a_personal_copy_with_a_free_name(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    pid = provider_id(client, admin_token)
    shared = create(
        client,
        admin_token,
        provider_id=pid,
        name="Team",
        model="llama3.2",
        system_prompt="Be kind.",
        max_tokens=64,
        options={"seed": 7},
    )
    copies = []
    for _ in range(2):
        r = client.post(f"/api/model-configs/{shared['id']}/duplicate", headers=bearer(user_token))
        assert r.status_code == 201, r.text
        copies.append(r.json())
    assert [c["name"] for c in copies] == ["Team (copy)", "Team (copy 2)"]
    first = copies[0]
    assert (first["shared"], first["editable"], first["system_prompt"], first["max_tokens"]) == (
        False,
        True,
        "Be kind.",
        64,
    )
    assert first["options"] == {"seed": 7} and first["model"] == "llama3.2"
    r = client.post(f"/api/model-configs/{uuid.uuid4()}/duplicate", headers=bearer(user_token))
    assert (r.status_code, r.json()["code"]) == (404, "model_config_not_found")


def test_admins_share_and_unshare(client: TestClient, admin_token: str, user_token: str) -> None:
    pid = provider_id(client, admin_token)
    draft = create(client, admin_token, provider_id=pid, name="Draft", model="llama3.2", shared=False)
    assert names(client, user_token) == []
    r = client.patch(f"/api/model-configs/{draft['id']}", json={"shared": True}, headers=bearer(admin_token))
    assert r.status_code == 200 and r.json()["shared"] is True and r.json()["owner_id"] is None
    assert names(client, user_token) == [("Draft", True, False)]
    r = client.patch(f"/api/model-configs/{draft['id']}", json={"shared": False}, headers=bearer(admin_token))
    assert r.json()["shared"] is False
    assert names(client, user_token) == []
    mine = create(client, user_token, provider_id=pid, name="Mine", model="llama3.2")
    r = client.patch(f"/api/model-configs/{mine['id']}", json={"shared": True}, headers=bearer(user_token))
    assert (r.status_code, r.json()["code"]) == (403, "admin_required")


def test_base_model_id_from_the_catalog(client: TestClient, admin_token: str, user_token: str) -> None:
    pid = provider_id(client, admin_token)
    preset = create(client, user_token, name="Via id", base_model_id=f"ollama:{pid}:qwen3:0.6b")
    assert (preset["provider_id"], preset["model"]) == (pid, "qwen3:0.6b")
    r = client.patch(
        f"/api/model-configs/{preset['id']}",
        json={"base_model_id": f"ollama:{pid}:llama3.2:latest"},
        headers=bearer(user_token),
    )
    assert r.status_code == 200 and r.json()["model"] == "llama3.2:latest"
    bad: list[dict[str, Any]] = [
        {"name": "x", "base_model_id": f"cfg:{preset['id']}"},  # a preset is not a base model
        {"name": "x", "base_model_id": f"openai:{pid}:gpt-4o"},  # the provider is Ollama
        {"name": "x", "base_model_id": f"ollama:{uuid.uuid4()}:llama3.2"},
        {"name": "x", "base_model_id": "nonsense"},
        {"name": "x", "base_model_id": f"ollama:{pid}:llama3.2", "model": "llama3.2"},  # both forms
        {"name": "x"},  # no base model
    ]
    for body in bad:
        r = client.post("/api/model-configs", json=body, headers=bearer(user_token))
        assert (r.status_code, r.json()["code"]) == (422, "invalid_base_model"), (body, r.text)
        assert set(r.json()) >= {"code", "message"}


def test_validation_errors_are_code_and_message(
    client: TestClient, user_token: str, admin_token: str
) -> None:
    pid = provider_id(client, admin_token)
    for body in (
        {"provider_id": pid, "name": "x", "model": "llama3.2", "top_p": 1.5},
        {"provider_id": pid, "name": "x", "model": "llama3.2", "options": {"nope": 1}},
        {"provider_id": pid, "name": "x", "model": "llama3.2", "owner_id": str(uuid.uuid4())},
        {"provider_id": pid, "name": " ", "model": "llama3.2"},
    ):
        r = client.post("/api/model-configs", json=body, headers=bearer(user_token))
        assert r.status_code == 422 and r.json()["code"] == "invalid_input" and r.json()["message"], body


def test_deleting_a_user_deletes_their_presets(
    client: TestClient, admin_token: str, create_user: Callable[..., str]
) -> None:
    alice = create_user("alice@example.com")
    pid = provider_id(client, admin_token)
    create(client, alice, provider_id=pid, name="Coder", model="llama3.2")
    users = client.get("/api/users", headers=bearer(admin_token)).json()["items"]
    alice_id = next(u["id"] for u in users if u["email"] == "alice@example.com")
    assert client.delete(f"/api/users/{alice_id}", headers=bearer(admin_token)).status_code == 204
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    from sqlalchemy import func, select

    from server.db.models import ModelConfig

    with runtime.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(ModelConfig)) == 0


def test_a_chat_with_a_preset_applies_it_and_others_cannot_use_it(
    client: TestClient, admin_token: str, create_user: Callable[..., str], fake_ollama: FakeOllama
) -> None:
    alice, bob = create_user("alice@example.com"), create_user("bob@example.com")
    pid = provider_id(client, admin_token)
    create(
        client,
        alice,
        provider_id=pid,
        name="Terse",
        model="llama3.2",
        system_prompt="Be terse.",
        max_tokens=3,
    )
    preset = next(
        m for m in client.get("/api/models", headers=bearer(alice)).json()["items"] if m["name"] == "Terse"
    )
    assert preset["defaults"]["system_prompt"] == "Be terse." and preset["defaults"]["max_tokens"] == 3
    r = client.post("/api/chat", json={"model": preset["id"], "content": "hi"}, headers=bearer(alice))
    assert r.status_code == 200, r.text
    events, _ = parse_sse(r.text)
    done = next(e.data for e in events if e.event == "done")
    # The system prompt reached Ollama, and max_tokens cut the reply short.
    assert done["message"]["content"].startswith("system=Be terse.")
    assert done["message"]["content"] != "system=Be terse. one two three four five six"
    assert ("POST", "/api/chat") in fake_ollama.requests

    chats = fake_ollama.requests.count(("POST", "/api/chat"))
    r = client.post("/api/chat", json={"model": preset["id"], "content": "hi"}, headers=bearer(bob))
    assert (r.status_code, r.json()["code"]) == (404, "model_not_found")
    assert fake_ollama.requests.count(("POST", "/api/chat")) == chats
