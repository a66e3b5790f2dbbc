"""Model configurations: admins change them, every signed-in user reads the enabled ones."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from tests.server.conftest import bearer


def default_provider_id(client: TestClient, admin_token: str) -> str:
    return client.get("/api/providers", headers=bearer(admin_token)).json()["items"][0]["id"]


def new_config(client: TestClient, admin_token: str, **body) -> dict:
    body.setdefault("provider_id", default_provider_id(client, admin_token))
    body.setdefault("name", "Assistant")
    body.setdefault("model", "llama3.2:latest")
    r = client.post("/api/model-configs", json=body, headers=bearer(admin_token))
    assert r.status_code == 201, r.text
    return r.json()


def test_create_read_update_delete(client: TestClient, admin_token: str, user_token: str) -> None:
    config = new_config(
        client,
        admin_token,
        name="Careful writer",
        system_prompt="You write carefully.",
        temperature=0.2,
        top_p=0.9,
        context_length=8192,
        max_tokens=512,
        options={"seed": 42, "stop": ["###"], "keep_alive": "10m"},
    )
    assert config["model"] == "llama3.2:latest" and config["enabled"] is True
    assert (config["temperature"], config["context_length"], config["options"]["seed"]) == (0.2, 8192, 42)

    listed = client.get("/api/model-configs", headers=bearer(user_token)).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == config["id"]

    r = client.patch(
        f"/api/model-configs/{config['id']}",
        json={"temperature": None, "max_tokens": 1024, "name": "Writer"},
        headers=bearer(admin_token),
    )
    assert r.status_code == 200
    changed = r.json()
    assert (changed["temperature"], changed["max_tokens"], changed["name"]) == (None, 1024, "Writer")
    assert changed["system_prompt"] == "You write carefully."  # untouched

    assert client.delete(f"/api/model-configs/{config['id']}", headers=bearer(admin_token)).status_code == 204
    assert client.get("/api/model-configs", headers=bearer(user_token)).json()["total"] == 0
    r = client.delete(f"/api/model-configs/{config['id']}", headers=bearer(admin_token))
    assert (r.status_code, r.json()["code"]) == (404, "model_config_not_found")


def test_users_cannot_change_shared_presets(client: TestClient, admin_token: str, user_token: str) -> None:
    config = new_config(client, admin_token)
    assert config["shared"] is True and config["owner_id"] is None  # an admin's, shared by default
    pid = config["provider_id"]
    for method, path, body in (
        (
            "POST",
            "/api/model-configs",
            {"provider_id": pid, "name": "x", "model": "llama3.2", "shared": True},
        ),
        ("PATCH", f"/api/model-configs/{config['id']}", {"name": "mine"}),
        ("DELETE", f"/api/model-configs/{config['id']}", None),
    ):
        r = client.request(method, path, json=body, headers=bearer(user_token))
        assert (r.status_code, r.json()["code"]) == (403, "admin_required"), (method, path)
    listed = client.get("/api/model-configs", headers=bearer(user_token)).json()["items"]
    assert [(c["name"], c["shared"], c["editable"]) for c in listed] == [("Assistant", True, False)]


def test_disabled_configurations_are_hidden_from_users(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    config = new_config(client, admin_token, enabled=False)
    assert client.get("/api/model-configs", headers=bearer(user_token)).json()["total"] == 0
    assert (
        client.get("/api/model-configs", headers=bearer(admin_token)).json()["items"][0]["id"] == config["id"]
    )
    client.patch(f"/api/model-configs/{config['id']}", json={"enabled": True}, headers=bearer(admin_token))
    assert client.get("/api/model-configs", headers=bearer(user_token)).json()["total"] == 1
    # ... and so are those of a disabled provider
    client.patch(
        f"/api/providers/{config['provider_id']}", json={"enabled": False}, headers=bearer(admin_token)
    )
    assert client.get("/api/model-configs", headers=bearer(user_token)).json()["total"] == 0


def test_validation(client: TestClient, admin_token: str) -> None:
    pid = default_provider_id(client, admin_token)
    bad = [
        ({"provider_id": pid, "name": "x", "model": "../etc/passwd"}, 422, "invalid_model_name"),
        ({"provider_id": pid, "name": "x", "model": "my model"}, 422, "invalid_model_name"),
        ({"provider_id": pid, "name": "x", "model": "llama3.2", "temperature": 3}, 422, "invalid_input"),
        (
            {"provider_id": pid, "name": "x", "model": "llama3.2", "options": {"num_gpu": 99}},
            422,
            "invalid_input",
        ),
        (
            {"provider_id": pid, "name": "x", "model": "llama3.2", "options": {"seed": "7"}},
            422,
            "invalid_input",
        ),
        (
            {"provider_id": pid, "name": "x", "model": "llama3.2", "options": {"top_k": True}},
            422,
            "invalid_input",
        ),
        ({"provider_id": pid, "name": "", "model": "llama3.2"}, 422, "invalid_input"),
        ({"provider_id": pid, "name": "x", "model": "llama3.2", "role": "admin"}, 422, "invalid_input"),
        ({"provider_id": str(uuid.uuid4()), "name": "x", "model": "llama3.2"}, 404, "provider_not_found"),
        ({"provider_id": "not-a-uuid", "name": "x", "model": "llama3.2"}, 422, "invalid_input"),
    ]
    for body, status, code in bad:
        r = client.post("/api/model-configs", json=body, headers=bearer(admin_token))
        assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
    new_config(client, admin_token, name="Same")
    r = client.post(
        "/api/model-configs",
        json={"provider_id": pid, "name": "same", "model": "qwen3:0.6b"},
        headers=bearer(admin_token),
    )
    assert (r.status_code, r.json()["code"]) == (409, "model_config_name_taken")
    r = client.patch(f"/api/model-configs/{uuid.uuid4()}", json={"name": "x"}, headers=bearer(admin_token))
    assert r.status_code == 404


def test_openai_model_names_are_free_form(client: TestClient, admin_token: str) -> None:
    r = client.post(
        "/api/providers",
        json={"name": "LM Studio", "kind": "openai", "base_url": "http://127.0.0.1:1234/v1"},
        headers=bearer(admin_token),
    )
    pid = r.json()["id"]
    config = new_config(
        client,
        admin_token,
        provider_id=pid,
        name="Llama GGUF",
        model="lmstudio-community/Meta-Llama-3-8B-Instruct-GGUF/x.gguf",
    )
    assert config["model"].endswith("x.gguf")


def test_deleting_a_provider_deletes_its_configurations(client: TestClient, admin_token: str) -> None:
    r = client.post(
        "/api/providers",
        json={"name": "Second", "kind": "ollama", "base_url": "http://127.0.0.1:11435"},
        headers=bearer(admin_token),
    )
    pid = r.json()["id"]
    new_config(client, admin_token, provider_id=pid)
    assert client.delete(f"/api/providers/{pid}", headers=bearer(admin_token)).status_code == 204
    assert client.get("/api/model-configs", headers=bearer(admin_token)).json()["total"] == 0
