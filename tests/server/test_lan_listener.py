"""The desktop host's LAN listener controller, used directly (the /api/lan switch over it is in test_lan.py):
registration, opening and closing, restoring at start-up, and the addresses and names it offers."""

from __future__ import annotations

import json
import socket
from collections import namedtuple
from collections.abc import Callable

import httpx
import pytest

from server import lan_listener
from server.embedded import EmbeddedServer
from server.errors import Conflict
from server.settings import Settings

Addr = namedtuple("Addr", "family address")


def _refused(url: str) -> bool:
    try:
        httpx.get(url + "/api/health", timeout=5)
    except httpx.ConnectError:
        return True
    return False


def test_the_controller_is_registered_once_as_runtime_lan(make_settings: Callable[..., Settings]) -> None:
    server = EmbeddedServer(make_settings(desktop_mode=True))
    assert server.lan is None
    assert server.runtime.lan is None
    lan = server.enable_lan_control()
    assert isinstance(lan, lan_listener.LanController)
    assert server.lan is lan
    assert server.runtime.lan is lan
    assert server.enable_lan_control() is lan


def test_nothing_opens_before_the_server_runs(make_settings: Callable[..., Settings]) -> None:
    server = EmbeddedServer(make_settings(desktop_mode=True))
    with pytest.raises(Conflict) as info:
        server.enable_lan_control().enable("127.0.0.1", 0)
    assert info.value.code == "lan_unavailable"


def test_open_again_on_the_same_address_keeps_the_listener(desktop: EmbeddedServer) -> None:
    lan = desktop.lan
    assert lan is not None
    first = lan.enable("127.0.0.1", 0)
    assert first["enabled"] is True
    assert first["urls"] == [f"http://127.0.0.1:{first['port']}"]
    assert lan.enable("127.0.0.1", 0) == first  # port 0: whatever port it already has
    assert httpx.get(first["url"] + "/api/health").json() == {"status": "ok"}
    off = lan.disable()
    assert off["enabled"] is False
    assert off["port"] == first["port"]
    assert _refused(first["url"])


def test_stopping_the_server_closes_the_listener_but_keeps_the_choice(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(desktop_mode=True)
    server = EmbeddedServer(settings)
    lan = server.enable_lan_control()
    server.start(timeout=60)
    try:
        url = lan.enable("127.0.0.1", 0)["url"]
    finally:
        server.stop()
    assert _refused(url)
    saved = json.loads((settings.data_dir / lan_listener.STATE_FILE).read_text())
    assert saved["enabled"] is True


def test_a_listener_that_cannot_be_restored_is_reported_not_fatal(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(desktop_mode=True)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / lan_listener.STATE_FILE).write_text(
        json.dumps({"enabled": True, "host": "127.0.0.1", "port": port})
    )
    server = EmbeddedServer(settings)
    lan = server.enable_lan_control()
    try:
        server.start(timeout=60)
        status = lan.status()
        assert status["enabled"] is False
        assert status["port"] == port
        assert status["error"]
        assert "already in use" in status["error"]
        assert httpx.get(server.url + "/api/health").status_code == 200  # the loopback listener runs
    finally:
        server.stop()
        taken.close()


def test_addresses_offered_for_a_bind_address(monkeypatch: pytest.MonkeyPatch) -> None:
    interfaces = {
        "lo": [Addr(socket.AF_INET, "127.0.0.1"), Addr(socket.AF_INET6, "::1")],
        "eth0": [
            Addr(socket.AF_INET, "192.168.1.20"),
            Addr(socket.AF_INET6, "fe80::1%eth0"),
            Addr(socket.AF_INET6, "2001:db8::20"),
        ],
        "wlan0": [
            Addr(socket.AF_INET, "192.168.1.20"),
            Addr(lan_listener.psutil.AF_LINK, "00:11:22:33:44:55"),
        ],
    }
    monkeypatch.setattr(lan_listener.psutil, "net_if_addrs", lambda: interfaces)
    assert lan_listener.interface_addresses("192.168.1.20") == ["192.168.1.20"]
    assert lan_listener.interface_addresses("0.0.0.0") == ["192.168.1.20"]
    assert lan_listener.interface_addresses("::") == ["192.168.1.20", "2001:db8::20"]


@pytest.mark.parametrize(
    ("hostname", "names"),
    [
        ("MyBox.", ["mybox", "mybox.local"]),
        ("box.example.org", ["box.example.org"]),
        ("localhost", []),
        ("", []),
    ],
)
def test_host_names_need_no_dns(monkeypatch: pytest.MonkeyPatch, hostname: str, names: list[str]) -> None:
    monkeypatch.setattr(lan_listener.socket, "gethostname", lambda: hostname)
    assert lan_listener.host_names() == names


def test_the_url_shown_prefers_a_private_ipv4_address() -> None:
    assert lan_listener._preferred(["2001:db8::20", "93.184.216.34", "192.168.1.20"]) == "192.168.1.20"
    assert lan_listener._preferred(["2001:db8::20"]) == "2001:db8::20"
    assert lan_listener._preferred([]) is None
