"""Host groups end to end: providers with a ``group``, one model in /api/models and /v1/models, chat
routed over three fake Ollama hosts, /api/hosts with health and loaded models, failover and recovery."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.services import gateway
from server.settings import Settings
from tests.fakes import FakeOllama
from tests.server.chat_support import parse_sse, wait_for
from tests.server.conftest import BASE_URL, bearer

MODEL = "llama3.2:latest"
GROUP_ID = f"group:farm:{MODEL}"


@pytest.fixture
def fakes() -> Iterator[list[FakeOllama]]:
    hosts = [FakeOllama(reply="routed answer").start() for _ in range(3)]
    try:
        yield hosts
    finally:
        for host in hosts:
            host.stop()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], fakes: list[FakeOllama]) -> Settings:
    # The default provider points at the first host; the probe loop's own rounds stay out of the way
    # (an hour) so the tests decide when hosts are probed, except the one about a due cool-down.
    return make_settings(
        ollama_url=fakes[0].url,
        models_discovery_timeout=2,
        models_cache_seconds=0.001,
        host_probe_seconds=3600,
        host_cooldown_seconds=0.2,
    )


def add_provider(client: TestClient, token: str, name: str, url: str, **extra) -> dict:
    body = {"name": name, "kind": "ollama", "base_url": url, **extra}
    r = client.post("/api/providers", json=body, headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def farm(client: TestClient, admin_token: str, fakes: list[FakeOllama]) -> list[dict]:
    """Three providers in group "farm" (not the default one, which stays out of the group)."""
    return [
        add_provider(client, admin_token, f"GPU {i}", fake.url, group="farm", weight=1 + i)
        for i, fake in enumerate(fakes)
    ]


def chat(client: TestClient, token: str, model: str) -> tuple[int, list, dict]:
    r = client.post("/api/chat", json={"model": model, "content": "hello"}, headers=bearer(token))
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        events, _ = parse_sse(r.text)
        return r.status_code, events, {}
    return r.status_code, [], r.json()


def chats(fake: FakeOllama) -> int:
    return sum(1 for request in fake.requests if request == ("POST", "/api/chat"))


def hosts(client: TestClient, token: str, *, probe: bool = False) -> dict[str, dict]:
    r = (client.post if probe else client.get)(
        "/api/hosts" + ("/probe" if probe else ""), headers=bearer(token)
    )
    assert r.status_code == 200, r.text
    return {h["name"]: h for h in r.json()["items"]}


# --- providers: the group field ----------------------------------------------------------------------------


def test_group_priority_and_weight_are_set_changed_and_cleared(
    client: TestClient, admin_token: str, farm: list[dict]
) -> None:
    assert (farm[2]["group"], farm[2]["priority"], farm[2]["weight"]) == ("farm", 0, 3.0)
    url = f"/api/providers/{farm[2]['id']}"
    r = client.patch(url, json={"group": "other", "priority": 2, "weight": 0.5}, headers=bearer(admin_token))
    assert r.status_code == 200 and (r.json()["group"], r.json()["priority"], r.json()["weight"]) == (
        "other",
        2,
        0.5,
    )
    r = client.patch(url, json={"group": ""}, headers=bearer(admin_token))
    assert r.status_code == 200 and r.json()["group"] is None


@pytest.mark.parametrize("group", ["has space", "-dash-first", "a:b", "x" * 65, "é"])
def test_invalid_group_names_are_refused(client: TestClient, admin_token: str, group: str) -> None:
    body = {"name": "X", "kind": "ollama", "base_url": "http://127.0.0.1:1", "group": group}
    r = client.post("/api/providers", json=body, headers=bearer(admin_token))
    assert r.status_code == 422, r.text


def test_only_ollama_providers_join_groups(client: TestClient, admin_token: str) -> None:
    body = {"name": "O", "kind": "openai", "base_url": "http://127.0.0.1:1", "group": "farm"}
    r = client.post("/api/providers", json=body, headers=bearer(admin_token))
    assert r.status_code in (400, 422) and r.json()["code"] == "group_not_supported"


def test_non_admins_cannot_see_hosts(client: TestClient, user_token: str) -> None:
    assert client.get("/api/hosts", headers=bearer(user_token)).status_code == 403


# --- one model, several hosts ------------------------------------------------------------------------------


def test_a_group_model_is_listed_once_with_all_its_hosts(
    client: TestClient, user_token: str, farm: list[dict]
) -> None:
    r = client.get("/api/models", headers=bearer(user_token))
    assert r.status_code == 200
    items = r.json()["items"]
    grouped = [m for m in items if m["id"] == GROUP_ID]
    assert len(grouped) == 1
    assert grouped[0]["group"] == "farm" and grouped[0]["name"] == MODEL
    assert sorted(h["name"] for h in grouped[0]["hosts"]) == ["GPU 0", "GPU 1", "GPU 2"]
    farm_ids = {p["id"] for p in farm}
    assert not [
        m for m in items if m["source"] == "ollama" and m["group"] is None and m["provider"]["id"] in farm_ids
    ]
    # the default provider (not in the group) still lists its own copy
    assert any(m["id"].startswith("ollama:") and m["name"] == MODEL for m in items)


def test_v1_lists_a_group_model_once_under_the_group_slug(
    client: TestClient, admin_token: str, user_token: str, farm: list[dict]
) -> None:
    r = client.post("/api/keys", json={"name": f"k-{uuid.uuid4().hex[:6]}"}, headers=bearer(user_token))
    sdk = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=r.json()["key"], http_client=client, max_retries=0)
    ids = [m.id for m in sdk.models.list()]
    assert ids.count(f"farm/{MODEL}") == 1
    assert not any(i.startswith("gpu-") for i in ids)
    answer = sdk.chat.completions.create(model=f"farm/{MODEL}", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "routed answer"


def test_v1_embeddings_through_a_group_fail_over(
    client: TestClient, user_token: str, farm: list[dict], fakes: list[FakeOllama]
) -> None:
    r = client.post("/api/keys", json={"name": f"k-{uuid.uuid4().hex[:6]}"}, headers=bearer(user_token))
    sdk = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=r.json()["key"], http_client=client, max_retries=0)
    fakes[0].stop()
    fakes[1].stop()
    for _ in range(3):
        result = sdk.embeddings.create(model="farm/nomic-embed-text:latest", input=["one", "two"])
        assert len(result.data) == 2
    embeds = sum(1 for request in fakes[2].requests if request == ("POST", "/api/embed"))
    assert embeds == 3


def test_v1_id_is_the_bare_name_when_the_group_holds_the_default_provider() -> None:
    default, other = uuid.uuid4(), uuid.uuid4()
    id_map = gateway.IdMap(
        default_ollama=default,
        providers={default: ("ollama-local", "ollama", "Ollama (local)"), other: ("gpu", "ollama", "GPU")},
        presets={},
        groups={default: "Farm", other: "Farm"},
    )
    assert id_map.v1_id(other, MODEL) == MODEL
    assert id_map.catalog_id(MODEL) == "group:Farm:" + MODEL
    id_map = gateway.IdMap(
        default_ollama=default,
        providers={default: ("ollama-local", "ollama", "Ollama (local)"), other: ("gpu", "ollama", "GPU")},
        presets={},
        groups={other: "GPU-Farm"},
    )
    assert id_map.v1_id(other, MODEL) == f"gpu-farm/{MODEL}"
    assert id_map.catalog_id(f"gpu-farm/{MODEL}") == "group:GPU-Farm:" + MODEL
    assert id_map.catalog_id(MODEL).startswith("ollama:")  # the default provider's own model


def test_chat_through_a_group_is_routed_by_weight(
    client: TestClient, user_token: str, farm: list[dict], fakes: list[FakeOllama]
) -> None:
    for _ in range(30):
        status, events, _ = chat(client, user_token, GROUP_ID)
        assert status == 200 and events[-1].event in ("done", "title")
    counts = [chats(f) for f in fakes]
    assert sum(counts) >= 30 and counts[2] > counts[0]  # weights 1, 2, 3 (titles are chats too)


def test_the_reply_records_the_host_that_served_it(
    client: TestClient, user_token: str, farm: list[dict]
) -> None:
    r = client.post("/api/chat", json={"model": GROUP_ID, "content": "hello"}, headers=bearer(user_token))
    events, _ = parse_sse(r.text)
    (done,) = [e for e in events if e.event == "done"]
    served = done.data["message"]["served_by"]
    assert served["name"] in {"GPU 0", "GPU 1", "GPU 2"}
    assert served["provider_id"] in {p["id"] for p in farm}
    conversation = events[0].data["conversation_id"]
    detail = client.get(f"/api/conversations/{conversation}", headers=bearer(user_token)).json()
    (reply,) = [m for m in detail["messages"] if m["role"] == "assistant"]
    assert reply["served_by"] == served


def test_failover_recovery_and_the_hosts_view(
    app: FastAPI,
    client: TestClient,
    admin_token: str,
    user_token: str,
    farm: list[dict],
    fakes: list[FakeOllama],
) -> None:
    view = hosts(client, admin_token)  # the first call probes
    assert [view[f"GPU {i}"]["state"] for i in range(3)] == ["healthy"] * 3
    assert view["GPU 0"]["group"] == "farm" and view["GPU 0"]["probe_latency_ms"] is not None
    status, _, _ = chat(client, user_token, GROUP_ID)
    assert status == 200
    view = hosts(client, admin_token, probe=True)
    loaded = [m for h in view.values() if h["name"].startswith("GPU") for m in h["loaded_models"]]
    assert loaded and loaded[0]["name"] == MODEL and loaded[0]["size_vram"] > 0

    port = fakes[1].port
    fakes[1].stop()
    for _ in range(12):  # no request is lost: the dead host is skipped or failed over
        status, _, body = chat(client, user_token, GROUP_ID)
        assert status == 200, body
    view = hosts(client, admin_token)
    assert view["GPU 1"]["state"] in ("cooling_down", "down")
    assert view["GPU 1"]["last_error"]

    fakes[1] = FakeOllama(port=port, reply="routed answer").start()
    # The probe loop probes a cooled-down host as soon as its cool-down is due (0.2 s doubling here),
    # long before the next full round (an hour in these tests).
    assert wait_for(lambda: hosts(client, admin_token)["GPU 1"]["state"] == "healthy", timeout=10)
    before = chats(fakes[1])
    for _ in range(20):
        chat(client, user_token, GROUP_ID)
    assert chats(fakes[1]) > before


def test_all_hosts_down_is_one_502_naming_them(
    client: TestClient, user_token: str, farm: list[dict], fakes: list[FakeOllama]
) -> None:
    for fake in fakes:
        fake.stop()
    status, _, body = chat(client, user_token, GROUP_ID)
    assert status == 502 and body["code"] == "all_hosts_failed"
    for name in ("GPU 0", "GPU 1", "GPU 2"):
        assert name in body["message"]
