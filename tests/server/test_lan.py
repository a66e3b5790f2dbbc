"""LAN access API (GET/PUT /api/lan) and the embedded LAN listener controller."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient

from server.embedded import EmbeddedServer
from server.lan_listener import host_names
from server.settings import Settings
from tests.server.conftest import ADMIN_PASSWORD, USER_PASSWORD, bearer, trusting

HEADER = "X-ModelTrain-Desktop"


# --- headless: no controller -----------------------------------------------------------------------


def test_headless_server_has_no_lan_switch(client: TestClient, admin_token: str) -> None:
    for r in (
        client.get("/api/lan", headers=bearer(admin_token)),
        client.put(
            "/api/lan", json={"enabled": True, "password": ADMIN_PASSWORD}, headers=bearer(admin_token)
        ),
    ):
        assert r.status_code == 409
        assert r.json()["code"] == "lan_unavailable"


def test_lan_needs_an_admin(client: TestClient, user_token: str) -> None:
    assert client.get("/api/lan").status_code == 401
    r = client.get("/api/lan", headers=bearer(user_token))
    assert r.status_code == 403 and r.json()["code"] == "admin_required"


@pytest.mark.parametrize(
    "body",
    [
        {"enabled": True, "host": "example.com", "password": "x"},
        {"enabled": True, "host": "0.0.0.0", "port": 70000, "password": "x"},
        {"enabled": "yes please", "password": "x"},
        {"enabled": True, "password": "x", "extra": 1},
        {},
    ],
)
def test_bad_input_is_422(client: TestClient, admin_token: str, body: dict) -> None:
    r = client.put("/api/lan", json=body, headers=bearer(admin_token))
    assert r.status_code == 422
    assert set(r.json()) == {"code", "message", "detail"}


# --- with the desktop host's controller --------------------------------------------------------------


@pytest.fixture
def owner(desktop: EmbeddedServer) -> str:
    """The desktop owner's session after the initial password was replaced."""
    first = httpx.post(desktop.url + "/api/auth/desktop", json={}, headers={HEADER: desktop.desktop_token})
    r = httpx.post(
        desktop.url + "/api/auth/desktop/password",
        json={"new_password": ADMIN_PASSWORD},
        headers=bearer(first.json()["access_token"]),
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def put(desktop: EmbeddedServer, token: str, body: dict) -> httpx.Response:
    return httpx.put(desktop.url + "/api/lan", json=body, headers=bearer(token), timeout=30)


def _refused(url: str) -> bool:
    try:
        httpx.get(url + "/api/health", timeout=5, verify=False)
    except httpx.ConnectError:
        return True
    return False


def test_off_by_default_with_defaults(desktop: EmbeddedServer, owner: str) -> None:
    r = httpx.get(desktop.url + "/api/lan", headers=bearer(owner))
    assert r.status_code == 200
    assert r.json()["enabled"] is False and r.json()["host"] == "0.0.0.0" and r.json()["port"] == 8765


def test_refused_while_an_initial_password_remains(desktop: EmbeddedServer) -> None:
    token = httpx.post(
        desktop.url + "/api/auth/desktop", json={}, headers={HEADER: desktop.desktop_token}
    ).json()["access_token"]
    from tests.server.conftest import INITIAL_PASSWORD

    r = put(desktop, token, {"enabled": True, "host": "127.0.0.1", "port": 0, "password": INITIAL_PASSWORD})
    assert r.status_code == 409 and r.json()["code"] == "initial_password_in_use"
    assert desktop.lan.status()["enabled"] is False


def test_refused_while_any_account_has_a_temporary_password(desktop: EmbeddedServer, owner: str) -> None:
    created = httpx.post(
        desktop.url + "/api/users",
        json={"email": "temp@example.com", "password": USER_PASSWORD},
        headers=bearer(owner),
    )
    assert created.status_code == 201
    reset = httpx.post(
        desktop.url + f"/api/users/{created.json()['id']}/password",
        json={"new_password": "temporary-Pass-77"},
        headers=bearer(owner),
    )
    assert reset.status_code == 200
    r = put(desktop, owner, {"enabled": True, "host": "127.0.0.1", "port": 0, "password": ADMIN_PASSWORD})
    assert r.status_code == 409 and r.json()["code"] == "initial_password_in_use"


def test_needs_the_password_again(desktop: EmbeddedServer, owner: str) -> None:
    missing = put(desktop, owner, {"enabled": True, "host": "127.0.0.1", "port": 0})
    assert missing.status_code == 422 and missing.json()["code"] == "password_required"
    wrong = put(
        desktop, owner, {"enabled": True, "host": "127.0.0.1", "port": 0, "password": "not-my-password"}
    )
    assert wrong.status_code == 403 and wrong.json()["code"] == "invalid_password"
    assert desktop.lan.status()["enabled"] is False


def test_turn_on_and_off(desktop: EmbeddedServer, owner: str) -> None:
    guard = desktop.runtime.guard
    before = set(guard.allowed_hosts)
    r = put(desktop, owner, {"enabled": True, "host": "127.0.0.1", "port": 0, "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    info = r.json()
    port = info["port"]
    assert info["enabled"] is True and info["url"] == f"https://127.0.0.1:{port}"
    assert port != int(desktop.url.rsplit(":", 1)[1])
    lan = f"https://127.0.0.1:{port}"
    ca = trusting(desktop)
    assert httpx.get(lan + "/api/health", verify=ca).json() == {"status": "ok"}
    assert (
        httpx.get(lan + "/api/users/me", verify=ca).status_code == 401
    )  # every LAN request needs a signed-in user
    assert "*" not in guard.allowed_hosts
    assert set(host_names()) <= guard.allowed_hosts
    saved = desktop.settings.data_dir / "lan.json"
    assert json.loads(saved.read_text()) == {"enabled": True, "host": "127.0.0.1", "port": port}
    if os.name == "posix":
        assert saved.stat().st_mode & 0o777 == 0o600

    off = put(desktop, owner, {"enabled": False})
    assert off.status_code == 200 and off.json()["enabled"] is False
    assert _refused(lan)  # closed at once
    assert guard.allowed_hosts == before
    assert json.loads(saved.read_text())["enabled"] is False
    assert httpx.get(desktop.url + "/api/health").status_code == 200  # loopback listener unaffected


def test_turning_off_over_the_lan_itself(desktop: EmbeddedServer, owner: str) -> None:
    port = put(
        desktop, owner, {"enabled": True, "host": "127.0.0.1", "port": 0, "password": ADMIN_PASSWORD}
    ).json()["port"]
    lan = f"https://127.0.0.1:{port}"
    ca = trusting(desktop)
    token = httpx.post(
        lan + "/api/auth/login", json={"email": "admin@example.com", "password": ADMIN_PASSWORD}, verify=ca
    ).json()["access_token"]
    r = httpx.put(lan + "/api/lan", json={"enabled": False}, headers=bearer(token), timeout=10, verify=ca)
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert _refused(lan)


def test_port_in_use(desktop: EmbeddedServer, owner: str) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        r = put(
            desktop,
            owner,
            {
                "enabled": True,
                "host": "127.0.0.1",
                "port": taken.getsockname()[1],
                "password": ADMIN_PASSWORD,
            },
        )
    finally:
        taken.close()
    assert r.status_code == 409 and r.json()["code"] == "port_in_use"


def test_address_not_on_this_machine(desktop: EmbeddedServer, owner: str) -> None:
    r = put(desktop, owner, {"enabled": True, "host": "192.0.2.55", "port": 0, "password": ADMIN_PASSWORD})
    assert r.status_code == 422 and r.json()["code"] == "address_unavailable"


def test_setting_survives_a_restart(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(desktop_mode=True)
    first = EmbeddedServer(settings)
    lan = first.enable_lan_control()
    first.start(timeout=60)
    try:
        port = lan.enable("127.0.0.1", 0)["port"]
    finally:
        first.stop()
    assert _refused(f"http://127.0.0.1:{port}")
    second = EmbeddedServer(settings)
    second.enable_lan_control()
    second.start(timeout=60)
    try:
        status = second.lan.status()
        assert status["enabled"] is True and status["port"] == port
        assert httpx.get(f"https://127.0.0.1:{port}/api/health", verify=trusting(second)).status_code == 200
    finally:
        second.stop()


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"enabled": true, "host": "*", "port": 8765}',
        "[1, 2]",
        '{"enabled": true, "host": "127.0.0.1", "port": 99999}',
    ],
)
def test_corrupted_setting_means_off(make_settings: Callable[..., Settings], content: str) -> None:
    settings = make_settings(desktop_mode=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "lan.json").write_text(content)
    server = EmbeddedServer(settings)
    server.enable_lan_control()
    server.start(timeout=60)
    try:
        assert server.lan.status()["enabled"] is False
        assert "*" not in server.runtime.guard.allowed_hosts
    finally:
        server.stop()
