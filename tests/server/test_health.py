from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import text


def test_health_is_public_and_tells_nothing_else(client: TestClient) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert "server" not in {k.lower() for k in r.headers}


def test_readiness_reports_database_and_migrations(client: TestClient, app) -> None:
    r = client.get("/api/health/ready")
    assert r.status_code == 200
    body = r.json()
    assert (
        body["status"] == "ready" and body["checks"]["database"]["ok"] and body["checks"]["migrations"]["ok"]
    )
    with app.state.runtime.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_old'"))
    r = client.get("/api/health/ready")
    assert r.status_code == 503 and r.json()["checks"]["migrations"]["ok"] is False


def test_malformed_json_and_wrong_types_are_422_never_500(client: TestClient) -> None:
    for body in (b"{", b"[]", b'{"email": 5, "password": null}', b"\xff\xfe", b'{"email":"a@b.co"}'):
        r = client.post("/api/auth/login", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, body
        assert set(r.json()) == {"code", "message", "detail"} and r.json()["code"] == "invalid_input"


def test_validation_errors_never_echo_the_password(client: TestClient) -> None:
    r = client.post("/api/auth/login", json={"email": "a@b.co", "password": "p" * 5000})
    assert r.status_code == 422 and "ppppp" not in r.text
