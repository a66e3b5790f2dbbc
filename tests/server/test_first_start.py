"""First start: a random, expiring, single-use initial admin password (docs/security.md, B1)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fastapi.testclient import TestClient
from sqlalchemy import update

from server.app import create_app
from server.db.models import User
from tests.server.conftest import ADMIN_EMAIL, BASE_URL, INITIAL_PASSWORD, bearer, login


def _fresh(make_settings, **kw):
    settings = make_settings(initial_admin_password=None, **kw)
    return settings, create_app(settings)


def test_random_initial_password_in_a_private_file(make_settings) -> None:
    settings, app = _fresh(make_settings)
    with TestClient(app, base_url=BASE_URL) as client:
        initial = app.state.initial_admin
        path = settings.data_dir / "initial_admin_password.txt"
        assert initial.password and initial.password != "admin123" and len(initial.password) >= 16
        assert path.stat().st_mode & 0o777 == 0o600
        assert initial.password in path.read_text()
        assert settings.data_dir.stat().st_mode & 0o777 == 0o700
        # admin123 (the spec's example) is not a password here.
        r = client.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": "admin123"})
        assert r.status_code == 401
        token = login(client, ADMIN_EMAIL, initial.password)
        r = client.post(
            "/api/auth/password",
            json={"current_password": initial.password, "new_password": "my-own-long-passphrase"},
            headers=bearer(token),
        )
        assert r.status_code == 200
        assert not path.exists()  # single use: the file goes once the password is changed
        r = client.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": initial.password})
        assert r.status_code == 401


def test_two_installs_get_different_passwords(make_settings, tmp_path) -> None:
    seen = set()
    for name in ("one", "two"):
        _, app = _fresh(
            make_settings, data_dir=tmp_path / name, database_url=f"sqlite:///{tmp_path / name / 'db.sqlite'}"
        )
        with TestClient(app, base_url=BASE_URL):
            seen.add(app.state.initial_admin.password)
    assert len(seen) == 2


def test_second_start_does_not_create_another_admin(make_settings) -> None:
    settings, app = _fresh(make_settings)
    with TestClient(app, base_url=BASE_URL):
        assert app.state.initial_admin is not None
    app2 = create_app(settings)
    with TestClient(app2, base_url=BASE_URL):
        assert app2.state.initial_admin is None


def test_initial_password_expires(make_settings) -> None:
    _, app = _fresh(make_settings)
    with TestClient(app, base_url=BASE_URL) as client:
        with app.state.runtime.session_factory.begin() as s:
            s.execute(
                update(User).values(password_expires_at=datetime.now(timezone.utc) - timedelta(minutes=1))
            )
        r = client.post(
            "/api/auth/login", json={"email": ADMIN_EMAIL, "password": app.state.initial_admin.password}
        )
        assert r.status_code == 403 and r.json()["code"] == "initial_password_expired"


def test_everything_but_me_password_and_logout_is_blocked_until_changed(client: TestClient) -> None:
    token = login(client, ADMIN_EMAIL, INITIAL_PASSWORD)
    me = client.get("/api/users/me", headers=bearer(token))
    assert me.status_code == 200 and me.json()["must_change_password"] is True
    for method, path in (("GET", "/api/users"), ("POST", "/api/users"), ("PATCH", "/api/users/me")):
        r = client.request(
            method, path, json={"display_name": "x"} if method != "GET" else None, headers=bearer(token)
        )
        if path == "/api/users/me":
            assert r.status_code == 200  # own display name is allowed like users/me
            continue
        assert r.status_code == 403 and r.json()["code"] == "password_change_required", path
    assert client.post("/api/auth/logout", json={}).status_code == 204
