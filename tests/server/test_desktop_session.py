"""Desktop sign-in (POST /api/auth/desktop) and desktop sessions, against a real EmbeddedServer."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from server.embedded import EmbeddedServer
from server.settings import Settings
from tests.server.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, INITIAL_PASSWORD, bearer, trusting

HEADER = "X-ModelTrain-Desktop"


@pytest.fixture
def http(desktop: EmbeddedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=desktop.url, timeout=30) as client:
        yield client


def sign_in(http: httpx.Client, token: str) -> httpx.Response:
    return http.post("/api/auth/desktop", json={}, headers={HEADER: token})


def test_desktop_token_signs_the_owner_in(desktop: EmbeddedServer, http: httpx.Client) -> None:
    r = sign_in(http, desktop.desktop_token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"]["email"] == ADMIN_EMAIL and body["user"]["role"] == "admin"
    assert body["user"]["must_change_password"] is True
    assert body["desktop"] is True  # the UI offers (rather than forces) the password change
    cookie = r.headers["set-cookie"]
    assert "modeltrain_refresh=" in cookie and "HttpOnly" in cookie and "Path=/api/auth" in cookie
    # The owner is not blocked by the initial-password rule in this session (admin route works)...
    assert http.get("/api/users", headers=bearer(body["access_token"])).status_code == 200
    # ...and the refreshed session is still a desktop session.
    refreshed = http.post("/api/auth/refresh", json={})
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["desktop"] is True
    assert http.get("/api/users", headers=bearer(refreshed.json()["access_token"])).status_code == 200


def test_prometheus_metrics_follow_the_same_owner_rule(desktop: EmbeddedServer, http: httpx.Client) -> None:
    """``/metrics`` with a token checks it exactly as every admin route does: the desktop owner (initial
    password still set) gets in, a password session of the same account does not."""
    owner = sign_in(http, desktop.desktop_token).json()["access_token"]
    r = http.get("/metrics", headers=bearer(owner))
    assert r.status_code == 200, r.text
    assert "modeltrain_active_streams" in r.text
    password = http.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": INITIAL_PASSWORD})
    denied = http.get("/metrics", headers=bearer(password.json()["access_token"]))
    assert denied.status_code == 403 and denied.json()["code"] == "password_change_required"


def test_password_sign_in_of_the_owner_is_still_blocked(desktop: EmbeddedServer, http: httpx.Client) -> None:
    r = http.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": INITIAL_PASSWORD})
    assert r.status_code == 200 and r.json()["desktop"] is False
    denied = http.get("/api/users", headers=bearer(r.json()["access_token"]))
    assert denied.status_code == 403 and denied.json()["code"] == "password_change_required"


@pytest.mark.parametrize(
    "where",
    ["missing", "wrong", "query", "cookie", "body", "authorization", "twice", "prefix"],
)
def test_token_only_counts_in_its_header(desktop: EmbeddedServer, http: httpx.Client, where: str) -> None:
    token = desktop.desktop_token
    kwargs: dict = {"json": {}}
    if where == "wrong":
        kwargs["headers"] = {HEADER: token[:-1] + ("A" if token[-1] != "A" else "B")}
    elif where == "query":
        kwargs["params"] = {"token": token, HEADER: token}
    elif where == "cookie":
        http.cookies.set(HEADER, token)
        http.cookies.set("desktop_token", token)
    elif where == "body":
        kwargs["json"] = {"token": token, "desktop_token": token}
    elif where == "authorization":
        kwargs["headers"] = {"Authorization": f"Bearer {token}"}
    elif where == "twice":
        kwargs["headers"] = [(HEADER, token), (HEADER, token)]
    elif where == "prefix":
        kwargs["headers"] = {HEADER: token[:20]}
    r = http.post("/api/auth/desktop", **kwargs)
    assert r.status_code == 401, r.text
    assert r.json()["code"] in ("invalid_desktop_token", "invalid_token", "not_authenticated")
    assert "set-cookie" not in r.headers


def test_non_loopback_host_is_refused(desktop: EmbeddedServer, http: httpx.Client) -> None:
    # The LAN names are allowed by the guard while LAN access is on, but never for the desktop token.
    desktop.runtime.guard.allowed_hosts.add("10.213.0.1")
    try:
        r = http.post(
            "/api/auth/desktop", json={}, headers={HEADER: desktop.desktop_token, "Host": "10.213.0.1"}
        )
    finally:
        desktop.runtime.guard.allowed_hosts.discard("10.213.0.1")
    assert r.status_code == 403 and r.json()["code"] == "desktop_sign_in_refused"


def test_lan_listener_refuses_the_token_and_desktop_sessions(
    desktop: EmbeddedServer, http: httpx.Client
) -> None:
    """Even on a loopback address, the LAN listener never accepts the desktop token or its sessions."""
    owner = sign_in(http, desktop.desktop_token).json()["access_token"]
    new = http.post(
        "/api/auth/desktop/password", json={"new_password": ADMIN_PASSWORD}, headers=bearer(owner)
    )
    assert new.status_code == 200
    desktop_session = sign_in(http, desktop.desktop_token).json()["access_token"]
    status = desktop.lan.enable("127.0.0.1", 0)
    lan = f"https://127.0.0.1:{status['port']}"
    try:
        # Over plain HTTP the LAN port only redirects: the request never reaches the app.
        plain = httpx.post(
            f"http://127.0.0.1:{status['port']}/api/auth/desktop",
            json={},
            headers={HEADER: desktop.desktop_token},
        )
        assert plain.status_code == 308 and plain.headers["location"] == lan + "/api/auth/desktop"
        with httpx.Client(base_url=lan, verify=trusting(desktop)) as on_lan:
            r = on_lan.post("/api/auth/desktop", json={}, headers={HEADER: desktop.desktop_token})
            assert r.status_code == 403 and r.json()["code"] == "desktop_sign_in_refused"
            assert on_lan.get("/api/users/me", headers=bearer(desktop_session)).status_code == 401
            assert http.get("/api/users/me", headers=bearer(desktop_session)).status_code == 200
            password_session = on_lan.post(
                "/api/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
            assert password_session.status_code == 200
            token = password_session.json()["access_token"]
            assert on_lan.get("/api/users/me", headers=bearer(token)).status_code == 200
    finally:
        desktop.lan.disable()


def test_not_available_outside_the_desktop_host(make_settings: Callable[..., Settings]) -> None:
    from server.app import create_app

    # Headless app: no token at all -> the endpoint does not exist.
    with TestClient(create_app(make_settings()), base_url="http://127.0.0.1:8000") as client:
        r = client.post("/api/auth/desktop", json={}, headers={HEADER: "anything"})
        assert r.status_code == 404
    # Desktop-mode app served by something other than EmbeddedServer's loopback listener: refused.
    app = create_app(make_settings(desktop_mode=True))
    token = app.state.runtime.desktop_token.value
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        r = client.post("/api/auth/desktop", json={}, headers={HEADER: token})
        assert r.status_code == 403 and r.json()["code"] == "desktop_sign_in_refused"


def test_desktop_session_sets_the_initial_password(desktop: EmbeddedServer, http: httpx.Client) -> None:
    owner = sign_in(http, desktop.desktop_token).json()["access_token"]
    weak = http.post("/api/auth/desktop/password", json={"new_password": "short"}, headers=bearer(owner))
    assert weak.status_code == 422
    r = http.post("/api/auth/desktop/password", json={"new_password": ADMIN_PASSWORD}, headers=bearer(owner))
    assert r.status_code == 200, r.text
    assert r.json()["user"]["must_change_password"] is False
    assert http.get("/api/users/me", headers=bearer(owner)).status_code == 401  # old sessions revoked
    fresh = r.json()["access_token"]
    assert http.get("/api/users", headers=bearer(fresh)).status_code == 200
    assert (
        http.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).status_code
        == 200
    )
    # Only while the password is still the initial one:
    again = http.post(
        "/api/auth/desktop/password",
        json={"new_password": "another-Long-pass-2"},
        headers=bearer(sign_in(http, desktop.desktop_token).json()["access_token"]),
    )
    assert again.status_code == 409 and again.json()["code"] == "password_already_set"


def test_password_sessions_cannot_use_the_desktop_password_route(
    desktop: EmbeddedServer, http: httpx.Client
) -> None:
    token = http.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": INITIAL_PASSWORD}).json()[
        "access_token"
    ]
    r = http.post("/api/auth/desktop/password", json={"new_password": ADMIN_PASSWORD}, headers=bearer(token))
    assert r.status_code == 403 and r.json()["code"] == "desktop_session_required"


def test_token_is_never_logged(
    desktop: EmbeddedServer, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    sign_in(http, desktop.desktop_token)
    sign_in(http, "wrong-token")
    assert desktop.desktop_token not in caplog.text
    assert desktop.desktop_token not in repr(desktop.runtime)
