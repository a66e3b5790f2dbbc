"""Explicit routes (``/api/routes``): one model name served by several (provider, model) targets, listed in
/api/models and /v1/models, chatted with through the routing and failover of server/providers/routed.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import openai
import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.fakes import FakeOllama
from tests.server.chat_support import parse_sse
from tests.server.conftest import BASE_URL, bearer


@pytest.fixture
def fakes() -> Iterator[list[FakeOllama]]:
    hosts = [FakeOllama(reply=f"answer from {i}").start() for i in range(2)]
    try:
        yield hosts
    finally:
        for host in hosts:
            host.stop()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], fakes: list[FakeOllama]) -> Settings:
    return make_settings(ollama_url=fakes[0].url, models_discovery_timeout=2, host_probe_seconds=3600)


@pytest.fixture
def providers(client: TestClient, admin_token: str, fakes: list[FakeOllama]) -> list[str]:
    """The default provider (host 0) and a second Ollama provider (host 1)."""
    items = client.get("/api/providers", headers=bearer(admin_token)).json()["items"]
    body = {"name": "Backup box", "kind": "ollama", "base_url": fakes[1].url}
    second = client.post("/api/providers", json=body, headers=bearer(admin_token)).json()
    return [items[0]["id"], second["id"]]


def make_route(client: TestClient, token: str, providers: list[str], name: str = "smart") -> dict:
    body = {
        "name": name,
        "targets": [
            {"provider_id": providers[0], "model": "llama3.2:latest", "priority": 0},
            {"provider_id": providers[1], "model": "qwen3:0.6b", "priority": 1, "weight": 2},
        ],
    }
    r = client.post("/api/routes", json=body, headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json()


def chat(client: TestClient, token: str, model: str) -> tuple[int, str]:
    r = client.post("/api/chat", json={"model": model, "content": "hello"}, headers=bearer(token))
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        events, _ = parse_sse(r.text)
        text = "".join(e.data.get("content", "") for e in events if e.event == "delta")
        return r.status_code, text
    return r.status_code, r.json()["code"]


def test_routes_crud(client: TestClient, admin_token: str, providers: list[str]) -> None:
    route = make_route(client, admin_token, providers)
    assert route["name"] == "smart" and route["enabled"] is True and len(route["targets"]) == 2
    assert route["targets"][1] == {
        "provider_id": providers[1],
        "model": "qwen3:0.6b",
        "priority": 1,
        "weight": 2.0,
    }
    listed = client.get("/api/routes", headers=bearer(admin_token)).json()["items"]
    assert [r["id"] for r in listed] == [route["id"]]
    url = f"/api/routes/{route['id']}"
    r = client.patch(url, json={"name": "smart-2", "enabled": False}, headers=bearer(admin_token))
    assert r.status_code == 200 and (r.json()["name"], r.json()["enabled"]) == ("smart-2", False)
    r = client.post(
        "/api/routes",
        json={"name": "SMART-2", "targets": [{"provider_id": providers[0], "model": "x"}]},
        headers=bearer(admin_token),
    )
    assert r.status_code == 409 and r.json()["code"] == "route_name_taken"
    assert client.delete(url, headers=bearer(admin_token)).status_code == 204
    assert client.get(url, headers=bearer(admin_token)).json()["code"] == "route_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "has space", "targets": [{"provider_id": str(uuid.uuid4()), "model": "m"}]},
        {"name": "ok", "targets": []},
        {"name": "ok", "targets": [{"provider_id": str(uuid.uuid4()), "model": "m", "weight": 0}]},
    ],
)
def test_invalid_routes_are_422(client: TestClient, admin_token: str, body: dict) -> None:
    assert client.post("/api/routes", json=body, headers=bearer(admin_token)).status_code == 422


def test_a_target_on_an_unknown_provider_is_refused(client: TestClient, admin_token: str) -> None:
    body = {"name": "ok", "targets": [{"provider_id": str(uuid.uuid4()), "model": "m"}]}
    r = client.post("/api/routes", json=body, headers=bearer(admin_token))
    assert r.status_code in (400, 422) and r.json()["code"] == "provider_not_found"


def test_users_cannot_manage_routes(client: TestClient, user_token: str) -> None:
    assert client.get("/api/routes", headers=bearer(user_token)).status_code == 403


def test_a_route_is_listed_and_fails_over_to_its_next_priority(
    client: TestClient, admin_token: str, user_token: str, providers: list[str], fakes: list[FakeOllama]
) -> None:
    route = make_route(client, admin_token, providers)
    items = client.get("/api/models", headers=bearer(user_token)).json()["items"]
    (listed,) = [m for m in items if m["source"] == "route"]
    assert listed["id"] == f"route:{route['id']}" and listed["name"] == "smart"
    assert [h["id"] for h in listed["hosts"]] == providers

    assert chat(client, user_token, listed["id"]) == (200, "answer from 0")  # priority 0 first
    fakes[0].stop()
    assert chat(client, user_token, listed["id"]) == (200, "answer from 1")  # then the next priority
    bodies = [path for method, path in fakes[1].requests if method == "POST"]
    assert "/api/chat" in bodies

    key = client.post("/api/keys", json={"name": "k"}, headers=bearer(user_token)).json()["key"]
    sdk = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=key, http_client=client, max_retries=0)
    assert "smart" in [m.id for m in sdk.models.list()]
    answer = sdk.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "answer from 1"


def test_a_disabled_route_is_not_offered(
    client: TestClient, admin_token: str, user_token: str, providers: list[str]
) -> None:
    route = make_route(client, admin_token, providers)
    client.patch(f"/api/routes/{route['id']}", json={"enabled": False}, headers=bearer(admin_token))
    items = client.get("/api/models", headers=bearer(user_token)).json()["items"]
    assert not [m for m in items if m["source"] == "route"]
    assert chat(client, user_token, f"route:{route['id']}") == (404, "model_not_found")
