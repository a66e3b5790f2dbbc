"""Sign-in, refresh rotation and reuse detection, logout, password change (docs/security.md, B3, B4, B6)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from server.api.routes.auth import REFRESH_COOKIE
from server.db.models import RefreshToken
from tests.server.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, USER_PASSWORD, bearer, login


def test_login_returns_token_user_and_strict_httponly_cookie(client: TestClient, admin_token: str) -> None:
    r = client.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 30 * 60
    assert body["user"]["email"] == ADMIN_EMAIL and "password_hash" not in body["user"]
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{REFRESH_COOKIE}=")
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/api/auth" in lowered
    assert "secure" not in lowered  # plain http on loopback; Secure is set under TLS


def test_cookie_is_secure_under_tls(app) -> None:
    with TestClient(app, base_url="https://127.0.0.1") as tls:
        from tests.server.conftest import INITIAL_PASSWORD

        r = tls.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": INITIAL_PASSWORD})
        assert r.status_code == 200
        assert "secure" in r.headers["set-cookie"].lower()


def test_email_is_case_insensitive(client: TestClient, admin_token: str) -> None:
    assert login(client, "  ADMIN@Example.com ", ADMIN_PASSWORD)


def test_unknown_email_answers_exactly_like_a_wrong_password(client: TestClient, admin_token: str) -> None:
    wrong = client.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": "not-the-password"})
    unknown = client.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": "not-the-password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "code": "invalid_credentials",
            "message": "wrong e-mail or password",
            "detail": None,
        }
    )


def _age_rotations(app: FastAPI, seconds: float) -> None:
    """Move every rotation ``seconds`` into the past (past the reuse grace window)."""
    with app.state.runtime.session_factory.begin() as s:
        s.execute(
            update(RefreshToken)
            .where(RefreshToken.used_at.is_not(None))
            .values(used_at=datetime.now(timezone.utc) - timedelta(seconds=seconds))
        )


def test_refresh_rotates_and_replay_revokes_the_family(
    client: TestClient, admin_token: str, app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    client.cookies.clear()
    login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    r1 = client.cookies.get(REFRESH_COOKIE)
    first = client.post("/api/auth/refresh", json={})
    assert first.status_code == 200
    r2 = client.cookies.get(REFRESH_COOKIE)
    assert r2 and r2 != r1
    access2 = first.json()["access_token"]
    assert client.get("/api/users/me", headers=bearer(access2)).status_code == 200

    # Replay of the used R1 after the grace window: refused, and R2 (same family) dies with it.
    _age_rotations(app, app.state.runtime.settings.refresh_reuse_grace_seconds + 1)
    client.cookies.set(REFRESH_COOKIE, r1, domain="127.0.0.1", path="/api/auth")
    with caplog.at_level(logging.WARNING, logger="modeltrain.security"):
        replay = client.post("/api/auth/refresh", json={})
    assert replay.status_code == 401
    assert any("reuse detected" in rec.getMessage() for rec in caplog.records)
    client.cookies.set(REFRESH_COOKIE, r2, domain="127.0.0.1", path="/api/auth")
    assert client.post("/api/auth/refresh", json={}).status_code == 401
    # ... and so does the access token of that session.
    assert client.get("/api/users/me", headers=bearer(access2)).status_code == 401


def _refresh_with(client: TestClient, token: str, user_agent: str | None = None) -> httpx.Response:
    """POST /api/auth/refresh with this refresh cookie (the client's jar left empty by the caller)."""
    headers = {"Cookie": f"{REFRESH_COOKIE}={token}"}
    if user_agent is not None:
        headers["User-Agent"] = user_agent
    return client.post("/api/auth/refresh", json={}, headers=headers)


def test_two_tabs_refreshing_at_once_both_stay_signed_in_and_the_family_does_not_split(
    client: TestClient, admin_token: str, app: FastAPI
) -> None:
    client.cookies.clear()
    login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    r1 = client.cookies.get(REFRESH_COOKIE)
    client.cookies.clear()
    start = threading.Barrier(2)

    def tab() -> httpx.Response:
        start.wait()
        return _refresh_with(client, r1)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: tab(), range(2)))
    assert [a.status_code for a in answers] == [200, 200]
    # Both tabs get an access token that works; exactly one answer rotates the cookie.
    for a in answers:
        assert client.get("/api/users/me", headers=bearer(a.json()["access_token"])).status_code == 200
    rotated = [a.cookies.get(REFRESH_COOKIE) for a in answers if REFRESH_COOKIE in a.cookies]
    assert len(rotated) == 1 and rotated[0] != r1
    # One live refresh token in the family: the rotation's, which goes on working.
    with app.state.runtime.session_factory() as s:
        family = s.scalar(select(RefreshToken.family_id).where(RefreshToken.used_at.is_not(None)))
        live = s.scalars(
            select(RefreshToken).where(
                RefreshToken.family_id == family,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
        ).all()
    assert len(live) == 1
    client.cookies.clear()
    assert _refresh_with(client, rotated[0]).status_code == 200


def test_the_grace_window_needs_the_same_browser_and_ends(
    client: TestClient, admin_token: str, app: FastAPI
) -> None:
    client.cookies.clear()
    login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    r1 = client.cookies.get(REFRESH_COOKIE)
    assert client.post("/api/auth/refresh", json={}).status_code == 200
    r2 = client.cookies.get(REFRESH_COOKIE)
    # Another browser presenting the just-rotated R1: a replay, which ends the session.
    client.cookies.clear()
    assert _refresh_with(client, r1, user_agent="curl/8.0").status_code == 401
    client.cookies.clear()
    assert _refresh_with(client, r2).status_code == 401

    # A new session; its R1 presented again after the window: a replay too.
    client.cookies.clear()
    login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    r1 = client.cookies.get(REFRESH_COOKIE)
    assert client.post("/api/auth/refresh", json={}).status_code == 200
    _age_rotations(app, app.state.runtime.settings.refresh_reuse_grace_seconds + 1)
    client.cookies.clear()
    assert _refresh_with(client, r1).status_code == 401


def test_refresh_without_cookie_or_with_garbage_is_401(client: TestClient) -> None:
    client.cookies.clear()
    assert client.post("/api/auth/refresh", json={}).status_code == 401
    client.cookies.set(REFRESH_COOKIE, "garbage", domain="127.0.0.1", path="/api/auth")
    r = client.post("/api/auth/refresh", json={})
    assert r.status_code == 401 and r.json()["code"] == "invalid_refresh_token"


def test_refresh_fails_after_the_absolute_lifetime(client: TestClient, admin_token: str, app) -> None:
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import update

    from server.db.models import RefreshToken

    client.cookies.clear()
    login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    runtime = app.state.runtime
    with runtime.session_factory.begin() as s:
        s.execute(update(RefreshToken).values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert client.post("/api/auth/refresh", json={}).status_code == 401


def test_logout_revokes_refresh_and_access_of_that_session(client: TestClient, admin_token: str) -> None:
    client.cookies.clear()
    access = login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    refresh_cookie = client.cookies.get(REFRESH_COOKIE)
    r = client.post("/api/auth/logout", json={})
    assert r.status_code == 204
    assert client.get("/api/users/me", headers=bearer(access)).status_code == 401
    client.cookies.set(REFRESH_COOKIE, refresh_cookie, domain="127.0.0.1", path="/api/auth")
    assert client.post("/api/auth/refresh", json={}).status_code == 401
    # Other sessions of the same user are untouched.
    assert client.get("/api/users/me", headers=bearer(admin_token)).status_code == 200


def test_password_change_revokes_every_session_and_opens_a_new_one(
    client: TestClient, admin_token: str
) -> None:
    other = login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    r = client.post(
        "/api/auth/password",
        json={"current_password": ADMIN_PASSWORD, "new_password": "a-brand-new-passphrase"},
        headers=bearer(other),
    )
    assert r.status_code == 200
    fresh = r.json()["access_token"]
    for old in (admin_token, other):
        assert client.get("/api/users/me", headers=bearer(old)).status_code == 401
    assert client.get("/api/users/me", headers=bearer(fresh)).status_code == 200
    assert login(client, ADMIN_EMAIL, "a-brand-new-passphrase")
    assert (
        client.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).status_code
        == 401
    )


def test_password_change_needs_the_current_password_and_a_good_new_one(
    client: TestClient, admin_token: str
) -> None:
    r = client.post(
        "/api/auth/password",
        json={"current_password": "wrong-current", "new_password": "another-good-passphrase"},
        headers=bearer(admin_token),
    )
    assert r.status_code == 401
    for bad, code in (
        ("short", "password_too_short"),
        ("password1", "password_too_short"),
        ("12345678", "password_too_common"),
    ):
        r = client.post(
            "/api/auth/password",
            json={"current_password": ADMIN_PASSWORD, "new_password": bad},
            headers=bearer(admin_token),
        )
        assert r.status_code == 422 and r.json()["code"] in {code, "password_too_common"}
    # Nothing changed: the old password still works.
    assert login(client, ADMIN_EMAIL, ADMIN_PASSWORD)


def test_argon2id_parameters_and_salting(app, client: TestClient, create_user) -> None:
    from sqlalchemy import select

    from server.db.models import User

    create_user("a@example.com", password=USER_PASSWORD)
    create_user("b@example.com", password=USER_PASSWORD)
    with app.state.runtime.session_factory() as s:
        hashes = dict(s.execute(select(User.email, User.password_hash)).all())
    assert hashes["a@example.com"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert hashes["a@example.com"] != hashes["b@example.com"]


def test_long_unicode_password_is_not_truncated(client: TestClient, create_user) -> None:
    password = "密码很长的口令" * 4 + "ünïcødé-пароль-" * 2  # > 80 UTF-8 bytes
    assert len(password.encode()) > 80
    create_user("long@example.com", password=password)
    assert login(client, "long@example.com", password)
    r = client.post("/api/auth/login", json={"email": "long@example.com", "password": password[:-1]})
    assert r.status_code == 401


def test_outdated_hash_is_upgraded_at_login(app, client: TestClient, create_user) -> None:
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher
    from sqlalchemy import select, update

    from server.db.models import User

    create_user("old@example.com")
    weak = PasswordHash((Argon2Hasher(memory_cost=8192, time_cost=1, parallelism=1),)).hash(USER_PASSWORD)
    with app.state.runtime.session_factory.begin() as s:
        s.execute(update(User).where(User.email == "old@example.com").values(password_hash=weak))
    assert login(client, "old@example.com", USER_PASSWORD)
    with app.state.runtime.session_factory() as s:
        stored = s.scalar(select(User.password_hash).where(User.email == "old@example.com"))
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
