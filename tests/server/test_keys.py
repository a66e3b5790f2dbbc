"""/api/keys: create (key shown once, only a hash stored), list, revoke, admin view and creation switch;
a key never authenticates /api."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.db.models import ApiKey
from tests.server.conftest import bearer


def _create(client: TestClient, token: str, **body) -> dict:
    r = client.post("/api/keys", json={"name": "laptop", **body}, headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json()


def test_create_returns_the_key_once_and_stores_only_a_hash(
    client: TestClient, app: FastAPI, user_token: str
) -> None:
    created = _create(client, user_token, models=["llama3*", "qwen2.5:7b"], ips=["10.0.0.0/8", "192.168.1.5"])
    key = created["key"]
    assert key.startswith("mt-") and len(key) >= 3 + 43  # base64url of 32 bytes
    assert created["prefix"] == key[:11] and created["name"] == "laptop"
    assert created["models"] == ["llama3*", "qwen2.5:7b"]
    assert created["ips"] == ["10.0.0.0/8", "192.168.1.5/32"]
    listed = client.get("/api/keys", headers=bearer(user_token)).json()["items"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and listed[0]["prefix"] == created["prefix"]
    with app.state.runtime.session_factory() as session:
        row = session.scalars(select(ApiKey)).one()
        stored = [str(v) for v in (row.hash, row.prefix, row.name, row.models, row.ips)]
    assert all(key not in value for value in stored)
    assert len(row.hash) == 64 and row.hash != key


def test_bad_input_is_a_clear_422(client: TestClient, user_token: str) -> None:
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    for body, code in (
        ({"name": "x", "ips": ["not-an-ip"]}, "invalid_ip"),
        ({"name": "x", "expires_at": past}, "expiry_in_past"),
        ({"name": "   "}, "invalid_name"),
        ({"name": ""}, "invalid_input"),
        ({"name": "x", "key": "mt-mine"}, "invalid_input"),
    ):
        r = client.post("/api/keys", json=body, headers=bearer(user_token))
        assert r.status_code == 422 and r.json()["code"] == code, (body, r.text)


def test_revoke_own_key_and_not_someone_elses(
    client: TestClient, user_token: str, create_user: Callable[..., str]
) -> None:
    mine = _create(client, user_token)
    other = create_user("other@example.com")
    r = client.delete(f"/api/keys/{mine['id']}", headers=bearer(other))
    assert r.status_code == 404 and r.json()["code"] == "api_key_not_found"
    assert client.delete(f"/api/keys/{mine['id']}", headers=bearer(user_token)).status_code == 204
    assert client.get("/api/keys", headers=bearer(user_token)).json()["items"] == []
    assert client.delete(f"/api/keys/{mine['id']}", headers=bearer(user_token)).status_code == 204


def test_admin_sees_filters_and_revokes_everyones_keys(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    users_key = _create(client, user_token, name="script")
    admins_key = _create(client, admin_token, name="admin's")
    everyone = client.get("/api/keys", headers=bearer(admin_token)).json()["items"]
    assert {k["id"] for k in everyone} == {users_key["id"], admins_key["id"]}
    assert {k["user_email"] for k in everyone} == {"user@example.com", "admin@example.com"}
    only = client.get(f"/api/keys?user_id={users_key['user_id']}", headers=bearer(admin_token)).json()
    assert [k["id"] for k in only["items"]] == [users_key["id"]]
    # a user sees only their own and may not ask for another user's
    assert [k["id"] for k in client.get("/api/keys", headers=bearer(user_token)).json()["items"]] == [
        users_key["id"]
    ]
    r = client.get(f"/api/keys?user_id={admins_key['user_id']}", headers=bearer(user_token))
    assert r.status_code == 403 and r.json()["code"] == "admin_required"
    assert client.delete(f"/api/keys/{users_key['id']}", headers=bearer(admin_token)).status_code == 204
    assert client.get("/api/keys", headers=bearer(user_token)).json()["items"] == []


def test_admin_switches_key_creation_off_for_the_user_role(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    assert client.get("/api/keys/settings", headers=bearer(user_token)).json() == {"user_creation": True}
    r = client.put("/api/keys/settings", json={"user_creation": False}, headers=bearer(user_token))
    assert r.status_code == 403
    r = client.put("/api/keys/settings", json={"user_creation": False}, headers=bearer(admin_token))
    assert r.status_code == 200 and r.json() == {"user_creation": False}
    assert client.get("/api/keys/settings", headers=bearer(user_token)).json() == {"user_creation": False}
    r = client.post("/api/keys", json={"name": "x"}, headers=bearer(user_token))
    assert r.status_code == 403 and r.json()["code"] == "key_creation_disabled"
    _create(client, admin_token)  # administrators always may
    client.put("/api/keys/settings", json={"user_creation": True}, headers=bearer(admin_token))
    _create(client, user_token)


def test_a_key_never_authenticates_api(client: TestClient, user_token: str) -> None:
    key = _create(client, user_token)["key"]
    for path in ("/api/users/me", "/api/keys"):
        r = client.get(path, headers=bearer(key))
        assert r.status_code == 401 and r.json()["code"] == "api_key_not_accepted", path
    assert client.get("/api/keys").status_code == 401
