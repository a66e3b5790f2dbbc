"""/api/onboarding: who sees the first-run guide, its state transitions, the suggested models."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.fakes import FakeOllama
from tests.fakes.fake_ollama import FakeModel
from tests.server.conftest import ADMIN_EMAIL, INITIAL_PASSWORD, bearer, login


@pytest.fixture
def empty_ollama() -> Iterator[FakeOllama]:
    """An Ollama with no model installed: a fresh install has nothing to chat with."""
    with FakeOllama(models={}) as fake:
        yield fake


@pytest.fixture
def settings(make_settings: Callable[..., Settings], empty_ollama: FakeOllama) -> Settings:
    # no cached model lists: a model installed during a test is seen at once
    return make_settings(ollama_url=empty_ollama.url, models_cache_seconds=0, models_discovery_timeout=0.5)


def state(client: TestClient, token: str) -> dict:
    r = client.get("/api/onboarding", headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


def act(client: TestClient, token: str, action: str) -> dict:
    r = client.post(f"/api/onboarding/{action}", headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


def test_an_admin_of_an_install_with_nothing_to_chat_with_sees_the_guide(
    client: TestClient, admin_token: str
) -> None:
    assert state(client, admin_token) == {"state": "pending", "show": True, "has_models": False}


def test_once_there_is_a_model_a_pending_guide_is_no_longer_shown(
    client: TestClient, admin_token: str, empty_ollama: FakeOllama
) -> None:
    empty_ollama.models["qwen3:0.6b"] = FakeModel(family="qwen3", parameter_size="0.6B", size=523_000_000)
    assert state(client, admin_token) == {"state": "pending", "show": False, "has_models": True}


def test_skip_complete_and_reopen(client: TestClient, admin_token: str, empty_ollama: FakeOllama) -> None:
    assert act(client, admin_token, "skip") == {"state": "skipped", "show": False, "has_models": False}
    assert state(client, admin_token)["show"] is False  # skipped stays hidden, even with nothing to chat with

    # reopened from Settings: shown (even once models exist) until finished or skipped again
    empty_ollama.models["qwen3:0.6b"] = FakeModel()
    assert act(client, admin_token, "reopen") == {"state": "open", "show": True, "has_models": True}
    assert state(client, admin_token)["show"] is True
    assert act(client, admin_token, "complete") == {"state": "completed", "show": False, "has_models": True}
    assert act(client, admin_token, "complete")["state"] == "completed"  # idempotent
    assert state(client, admin_token) == {"state": "completed", "show": False, "has_models": True}


def test_the_state_is_per_administrator(client: TestClient, admin_token: str, create_user) -> None:
    other = create_user("second-admin@example.com", role="admin")
    act(client, admin_token, "skip")
    assert state(client, other) == {"state": "pending", "show": True, "has_models": False}


def test_a_user_never_sees_it_and_cannot_change_it(client: TestClient, user_token: str) -> None:
    assert state(client, user_token) == {"state": "pending", "show": False, "has_models": False}
    for action in ("complete", "skip", "reopen"):
        r = client.post(f"/api/onboarding/{action}", headers=bearer(user_token))
        assert r.status_code == 403 and r.json()["code"] == "admin_required"
    r = client.get("/api/onboarding/models", headers=bearer(user_token))
    assert r.status_code == 403 and r.json()["code"] == "admin_required"


def test_the_initial_password_comes_first(client: TestClient) -> None:
    token = login(client, ADMIN_EMAIL, INITIAL_PASSWORD)
    r = client.get("/api/onboarding", headers=bearer(token))
    assert r.status_code == 403 and r.json()["code"] == "password_change_required"


def test_suggested_models_carry_a_fit_against_this_machine(client: TestClient, admin_token: str) -> None:
    r = client.get("/api/onboarding/models", headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (
        body["machine"]["ram_total"] > 0
        and 0 < body["machine"]["ram_available"] <= body["machine"]["ram_total"]
    )
    names = [m["name"] for m in body["items"]]
    assert 5 <= len(names) <= 8 and "qwen3:0.6b" in names and "llama3.2:1b" in names
    for m in body["items"]:
        assert m["fit"] in ("fits", "tight", "too_big")
        assert m["memory_needed"] > m["download_size"] > 0
        assert m["key"] and m["parameter_size"]
