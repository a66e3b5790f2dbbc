from fastapi.testclient import TestClient

from tests.server.conftest import bearer


def test_admin_can_sign_in_and_read_me(client: TestClient, admin_token: str) -> None:
    r = client.get("/api/users/me", headers=bearer(admin_token))
    assert r.status_code == 200
    assert r.json()["role"] == "admin"
    assert r.json()["must_change_password"] is False
