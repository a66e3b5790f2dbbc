"""Users: me, admin CRUD, paging, last-admin guard, immediate effect of disable/demote (B4, C2)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.server.conftest import USER_PASSWORD, bearer, login


def _me(client: TestClient, token: str) -> dict:
    r = client.get("/api/users/me", headers=bearer(token))
    assert r.status_code == 200
    return r.json()


def test_admin_creates_lists_and_pages_users(client: TestClient, admin_token: str) -> None:
    for i in range(5):
        r = client.post(
            "/api/users",
            json={"email": f"U{i}@Example.com", "password": USER_PASSWORD},
            headers=bearer(admin_token),
        )
        assert r.status_code == 201
        assert r.json()["email"] == f"u{i}@example.com" and r.json()["role"] == "user"
    page1 = client.get("/api/users?page=1&size=4", headers=bearer(admin_token)).json()
    page2 = client.get("/api/users?page=2&size=4", headers=bearer(admin_token)).json()
    assert page1["total"] == page2["total"] == 6
    assert len(page1["items"]) == 4 and len(page2["items"]) == 2
    assert not {u["id"] for u in page1["items"]} & {u["id"] for u in page2["items"]}
    assert client.get("/api/users?size=1000", headers=bearer(admin_token)).status_code == 422
    assert client.get("/api/users?page=0", headers=bearer(admin_token)).status_code == 422


def test_duplicate_email_and_bad_input_are_clear_4xx(client: TestClient, admin_token: str) -> None:
    body = {"email": "dup@example.com", "password": USER_PASSWORD}
    assert client.post("/api/users", json=body, headers=bearer(admin_token)).status_code == 201
    r = client.post("/api/users", json={**body, "email": "DUP@example.com"}, headers=bearer(admin_token))
    assert r.status_code == 409 and r.json()["code"] == "email_taken"
    for bad in (
        {"email": "not-an-email", "password": USER_PASSWORD},
        {"email": "x@example.com", "password": "short"},
        {"email": "x@example.com", "password": USER_PASSWORD, "role": "root"},
        {"email": "x@example.com", "password": USER_PASSWORD, "is_admin": True},
    ):
        r = client.post("/api/users", json=bad, headers=bearer(admin_token))
        assert r.status_code == 422, bad
        assert set(r.json()) == {"code", "message", "detail"}


def test_user_cannot_promote_themselves(client: TestClient, user_token: str) -> None:
    r = client.patch(
        "/api/users/me", json={"display_name": "Me", "role": "admin"}, headers=bearer(user_token)
    )
    assert r.status_code == 422
    r = client.patch("/api/users/me", json={"display_name": "Me"}, headers=bearer(user_token))
    assert r.status_code == 200 and r.json()["display_name"] == "Me" and r.json()["role"] == "user"


def test_disable_takes_effect_on_the_next_request(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    user_id = _me(client, user_token)["id"]
    r = client.patch(f"/api/users/{user_id}", json={"is_active": False}, headers=bearer(admin_token))
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert client.get("/api/users/me", headers=bearer(user_token)).status_code == 401
    r = client.post("/api/auth/login", json={"email": "user@example.com", "password": USER_PASSWORD})
    assert r.status_code == 403 and r.json()["code"] == "account_disabled"
    client.patch(f"/api/users/{user_id}", json={"is_active": True}, headers=bearer(admin_token))
    assert login(client, "user@example.com", USER_PASSWORD)


def test_demotion_takes_effect_on_the_next_request(client: TestClient, admin_token: str, create_user) -> None:
    second = create_user("second@example.com", role="admin")
    assert client.get("/api/users", headers=bearer(second)).status_code == 200
    second_id = _me(client, second)["id"]
    client.patch(f"/api/users/{second_id}", json={"role": "user"}, headers=bearer(admin_token))
    assert client.get("/api/users", headers=bearer(second)).status_code == 403


def test_the_last_admin_cannot_be_removed_demoted_or_disabled(client: TestClient, admin_token: str) -> None:
    admin_id = _me(client, admin_token)["id"]
    for method, body in (("PATCH", {"role": "user"}), ("PATCH", {"is_active": False}), ("DELETE", None)):
        r = client.request(method, f"/api/users/{admin_id}", json=body, headers=bearer(admin_token))
        assert r.status_code == 409 and r.json()["code"] == "last_admin"
    assert _me(client, admin_token)["role"] == "admin"


def test_admin_password_reset_forces_a_change_and_revokes_sessions(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    user_id = _me(client, user_token)["id"]
    r = client.post(
        f"/api/users/{user_id}/password",
        json={"new_password": "temporary-pass-42"},
        headers=bearer(admin_token),
    )
    assert r.status_code == 200 and r.json()["must_change_password"] is True
    assert client.get("/api/users/me", headers=bearer(user_token)).status_code == 401
    token = login(client, "user@example.com", "temporary-pass-42")
    r = client.get("/api/users", headers=bearer(token))
    assert r.status_code == 403 and r.json()["code"] == "password_change_required"


def test_unknown_and_malformed_ids_are_404_and_422(client: TestClient, admin_token: str) -> None:
    r = client.get("/api/users/00000000-0000-0000-0000-000000000000", headers=bearer(admin_token))
    assert r.status_code == 404 and r.json()["code"] == "user_not_found"
    r = client.get("/api/users/..%2F..%2Fetc%2Fpasswd", headers=bearer(admin_token))
    assert r.status_code in (404, 422)
    r = client.get("/api/users/not-a-uuid", headers=bearer(admin_token))
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"
