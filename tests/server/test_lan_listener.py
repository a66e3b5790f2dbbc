"""The desktop host's LAN listener controller, used directly (the /api/lan switch over it is in test_lan.py):
registration, opening and closing, restoring at start-up, and the addresses and names it offers."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
from collections import namedtuple
from collections.abc import Callable

import httpx
import pytest
from cryptography import x509

from server import lan_listener
from server.embedded import EmbeddedServer
from server.errors import Conflict
from server.settings import Settings
from tests.server.conftest import trusting

Addr = namedtuple("Addr", "family address")


def _refused(url: str) -> bool:
    try:
        httpx.get(url + "/api/health", timeout=5, verify=False)
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
    assert first["urls"] == [f"https://127.0.0.1:{first['port']}"]
    assert lan.enable("127.0.0.1", 0) == first  # port 0: whatever port it already has
    assert httpx.get(first["url"] + "/api/health", verify=trusting(desktop)).json() == {"status": "ok"}
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


# --- HTTPS on the LAN listener -------------------------------------------------------------------------


def _peer_certificate(port: int, context: ssl.SSLContext) -> x509.Certificate:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)


def test_https_with_the_ca_trusted_and_refused_without_it(desktop: EmbeddedServer) -> None:
    assert desktop.lan is not None
    on = desktop.lan.enable("127.0.0.1", 0)
    assert on["url"].startswith("https://")
    assert httpx.get(on["url"] + "/api/health", verify=trusting(desktop)).json() == {"status": "ok"}
    with pytest.raises(ssl.SSLCertVerificationError):
        _peer_certificate(on["port"], ssl.create_default_context())  # the system store does not know our CA
    with pytest.raises(httpx.ConnectError):
        httpx.get(on["url"] + "/api/health")
    assert httpx.get(desktop.url + "/api/health").status_code == 200  # loopback stays plain HTTP


def test_plain_http_on_the_lan_port_only_redirects(desktop: EmbeddedServer) -> None:
    assert desktop.lan is not None
    port = desktop.lan.enable("127.0.0.1", 0)["port"]
    plain = f"http://127.0.0.1:{port}"
    r = httpx.get(plain + "/settings?tab=lan")
    assert r.status_code == 308 and r.headers["location"] == f"https://127.0.0.1:{port}/settings?tab=lan"
    login = httpx.post(plain + "/api/auth/login", json={"email": "a@example.com", "password": "x"})
    assert login.status_code == 308 and login.content == b""  # nothing reaches the app over plain HTTP
    assert login.headers["location"] == f"https://127.0.0.1:{port}/api/auth/login"
    foreign = httpx.get(plain + "/", headers={"Host": "rebind.attacker.test"})
    assert foreign.status_code == 421 and "location" not in foreign.headers
    followed = httpx.get(plain + "/api/health", follow_redirects=True, verify=trusting(desktop))
    assert followed.json() == {"status": "ok"} and followed.url.scheme == "https"


def test_the_ca_certificate_downloads_over_http_https_and_loopback(desktop: EmbeddedServer) -> None:
    assert desktop.lan is not None
    assert httpx.get(desktop.url + lan_listener.CA_PATH).status_code == 404  # none before first use
    on = desktop.lan.enable("127.0.0.1", 0)
    port = on["port"]
    assert on["ca_download_url"] == f"http://127.0.0.1:{port}{lan_listener.CA_PATH}"
    assert on["ca_download_path"] == lan_listener.CA_PATH
    plain = httpx.get(on["ca_download_url"])
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "application/x-x509-ca-cert"
    ca = x509.load_der_x509_certificate(plain.content)
    assert ca == x509.load_pem_x509_certificate((desktop.settings.data_dir / "tls" / "ca.crt").read_bytes())
    assert on["ca_fingerprint_sha256"] == ":".join(f"{b:02X}" for b in hashlib.sha256(plain.content).digest())
    secure = httpx.get(f"https://127.0.0.1:{port}{lan_listener.CA_PATH}", verify=trusting(desktop))
    local = httpx.get(desktop.url + lan_listener.CA_PATH)
    assert secure.content == local.content == plain.content
    assert httpx.head(on["ca_download_url"]).headers["content-length"] == str(len(plain.content))


def test_a_renewed_certificate_is_used_for_new_connections(
    desktop: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert desktop.lan is not None
    on = desktop.lan.enable("127.0.0.1", 0)
    before = _peer_certificate(on["port"], trusting(desktop))
    assert desktop.lan.renew_certificate() is False  # still good: kept
    monkeypatch.setattr(lan_listener, "host_names", lambda: ["renamed-box", "renamed-box.local"])
    assert desktop.lan.renew_certificate() is True  # the machine's names changed
    after = _peer_certificate(on["port"], trusting(desktop))  # a new handshake on the same listener
    assert after.serial_number != before.serial_number
    san = after.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "renamed-box.local" in san.get_values_for_type(x509.DNSName)
    assert "renamed-box.local" in desktop.runtime.guard.allowed_hosts
    assert desktop.lan.status()["certificate_expires_at"] == after.not_valid_after_utc
    assert httpx.get(on["url"] + "/api/health", verify=trusting(desktop)).status_code == 200
    desktop.lan.disable()
    assert "renamed-box.local" not in desktop.runtime.guard.allowed_hosts
    assert desktop.lan.renew_certificate() is False  # nothing to renew while off
    assert desktop.lan.enable("127.0.0.1", 0)["ca_fingerprint_sha256"] == on["ca_fingerprint_sha256"]


def test_an_unreadable_ca_key_keeps_lan_off(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(desktop_mode=True)
    server = EmbeddedServer(settings)
    lan = server.enable_lan_control()
    server.start(timeout=60)
    try:
        lan.enable("127.0.0.1", 0)
        lan.disable()
        (settings.data_dir / "tls" / "ca.key").write_text("not a key")
        with pytest.raises(Conflict) as info:
            lan.enable("127.0.0.1", 0)
        assert info.value.code == "lan_certificate_unavailable"
        assert lan.status()["enabled"] is False
        assert "*" not in server.runtime.guard.allowed_hosts
    finally:
        server.stop()
    (settings.data_dir / lan_listener.STATE_FILE).write_text(
        json.dumps({"enabled": True, "host": "127.0.0.1", "port": 0})
    )
    again = EmbeddedServer(settings)
    lan = again.enable_lan_control()
    again.start(timeout=60)
    try:
        status = lan.status()
        assert status["enabled"] is False and "unreadable" in status["error"]
        assert httpx.get(again.url + "/api/health").status_code == 200
    finally:
        again.stop()


def test_a_browser_on_the_lan_signs_in_over_https(desktop: EmbeddedServer) -> None:
    """The app sees the scheme as https, so the same-origin check accepts the browser's https Origin."""
    assert desktop.lan is not None
    on = desktop.lan.enable("127.0.0.1", 0)
    r = httpx.post(
        on["url"] + "/api/auth/login",
        json={"email": "nobody@example.com", "password": "wrong-password-1"},
        headers={"Origin": on["url"], "Sec-Fetch-Site": "same-origin"},
        verify=trusting(desktop),
    )
    assert r.status_code == 401, r.text  # reached authentication: not refused as cross-origin
    cross = httpx.post(
        on["url"] + "/api/auth/login",
        json={"email": "nobody@example.com", "password": "wrong-password-1"},
        headers={"Origin": on["url"].replace("https://", "http://")},
        verify=trusting(desktop),
    )
    assert cross.status_code == 403
