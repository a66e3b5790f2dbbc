"""LAN access seen from another host: a network namespace joined to this one by a veth pair that the
test creates itself (private test range 10.213.x.y/30 on the veth only; the machine's real interfaces
are never touched). Needs root (CI runs as root)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from server.embedded import EmbeddedServer
from tests.desktop.conftest import ADMIN_PASSWORD

HEADER = "X-ModelTrain-Desktop"
USER_EMAIL = "lan-user@example.com"
USER_PASSWORD = "lan-user-Password-1"

# A phone-like client: it downloads the CA over plain HTTP, compares its fingerprint with the one the LAN
# dialog shows, trusts it, and then talks HTTPS; without the CA its system trust store refuses us.
_CLIENT = r"""
import hashlib, json, ssl, sys, urllib.request, urllib.error
job = json.load(sys.stdin)
base = job["url"]
trusted = ssl.create_default_context()
untrusted = ssl.create_default_context()

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

def call(method, path, headers=None, body=None, context=None, url=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request((url or base) + path, data=data, method=method, headers=headers or {})
    if body is not None:
        req.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(
        NoRedirect(), urllib.request.HTTPSHandler(context=context or trusted)
    )
    try:
        with opener.open(req, timeout=10) as r:
            return [r.status, json.loads(r.read() or b"null")]
    except urllib.error.HTTPError as e:
        if 300 <= e.code < 400:
            return [e.code, e.headers.get("Location")]
        return [e.code, json.loads(e.read() or b"null")]
    except OSError as e:
        reason = getattr(e, "reason", e)
        return [0, type(reason).__name__]

out = {}
if job["mode"] == "probe":
    out["untrusted"] = call("GET", "/api/health", context=untrusted)
    with urllib.request.urlopen(job["ca_download_url"], timeout=10) as r:
        der = r.read()
        out["ca_type"] = r.headers.get("Content-Type")
    out["ca_fingerprint"] = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    trusted.load_verify_locations(cadata=der)
    out["plain"] = call("GET", "/api/health", url=job["plain_url"])
    out["health"] = call("GET", "/api/health")
    out["anonymous_me"] = call("GET", "/api/users/me")
    out["desktop_token"] = call("POST", "/api/auth/desktop", {job["header"]: job["token"]}, {})
    session = {"Authorization": "Bearer " + job["desktop_session"]}
    out["desktop_session"] = call("GET", "/api/users/me", session)
    out["rebinding"] = call("GET", "/api/health", {"Host": "rebind.attacker.test"})
    login = call("POST", "/api/auth/login", None, {"email": job["email"], "password": job["password"]})
    out["login"] = [login[0], None]
    if login[0] == 200:
        out["me"] = call("GET", "/api/users/me", {"Authorization": "Bearer " + login[1]["access_token"]})
else:
    out["health"] = call("GET", "/api/health")
print(json.dumps(out))
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class Namespace:
    name: str
    host_ip: str
    peer_ip: str

    def run_client(self, job: dict) -> dict:
        out = subprocess.run(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", _CLIENT],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return json.loads(out.stdout)


@pytest.fixture
def other_host() -> Iterator[Namespace]:
    tag = secrets.token_hex(3)
    name = f"mt-test-{tag}"
    host_if, peer_if = f"mtv{tag}a", f"mtv{tag}b"
    third = secrets.randbelow(256)
    fourth = secrets.randbelow(64) * 4
    host_ip, peer_ip = f"10.213.{third}.{fourth + 1}", f"10.213.{third}.{fourth + 2}"
    try:
        _ip("netns", "add", name)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{peer_ip}/30", "dev", peer_if)
        _ip("netns", "exec", name, "ip", "link", "set", peer_if, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield Namespace(name, host_ip, peer_ip)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30, check=False)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_lan_listener_reachable_from_another_host(embedded: EmbeddedServer, other_host: Namespace) -> None:
    url = embedded.url
    first = httpx.post(url + "/api/auth/desktop", json={}, headers={HEADER: embedded.desktop_token}).json()
    owner = httpx.post(
        url + "/api/auth/desktop/password",
        json={"new_password": ADMIN_PASSWORD},
        headers=_bearer(first["access_token"]),
    ).json()["access_token"]
    created = httpx.post(
        url + "/api/users", json={"email": USER_EMAIL, "password": USER_PASSWORD}, headers=_bearer(owner)
    )
    assert created.status_code == 201, created.text
    desktop_session = httpx.post(
        url + "/api/auth/desktop", json={}, headers={HEADER: embedded.desktop_token}
    ).json()["access_token"]

    on = httpx.put(
        url + "/api/lan",
        headers=_bearer(owner),
        timeout=30,
        json={"enabled": True, "host": other_host.host_ip, "port": 0, "password": ADMIN_PASSWORD},
    )
    assert on.status_code == 200, on.text
    lan_url = on.json()["url"]
    port = on.json()["port"]
    assert lan_url == f"https://{other_host.host_ip}:{port}"
    ca_download_url = on.json()["ca_download_url"]
    assert ca_download_url == f"http://{other_host.host_ip}:{port}/api/lan/ca.crt"
    assert other_host.host_ip in on.json()["addresses"] and "*" not in on.json()["addresses"]

    seen = other_host.run_client(
        {
            "mode": "probe",
            "url": lan_url,
            "plain_url": f"http://{other_host.host_ip}:{port}",
            "ca_download_url": ca_download_url,
            "token": embedded.desktop_token,
            "header": HEADER,
            "desktop_session": desktop_session,
            "email": USER_EMAIL,
            "password": USER_PASSWORD,
        }
    )
    assert seen["untrusted"] == [0, "SSLCertVerificationError"]  # refused without the CA
    assert seen["ca_type"] == "application/x-x509-ca-cert"
    assert seen["ca_fingerprint"] == on.json()["ca_fingerprint_sha256"]
    assert seen["plain"] == [308, f"{lan_url}/api/health"]
    assert seen["health"] == [200, {"status": "ok"}]  # HTTPS with the CA trusted
    assert seen["anonymous_me"][0] == 401
    assert seen["desktop_token"][0] == 403 and seen["desktop_token"][1]["code"] == "desktop_sign_in_refused"
    assert seen["desktop_session"][0] == 401
    assert seen["rebinding"][0] == 403 and seen["rebinding"][1]["code"] == "host_not_allowed"
    assert seen["login"][0] == 200
    assert seen["me"][0] == 200 and seen["me"][1]["email"] == USER_EMAIL

    off = httpx.put(url + "/api/lan", headers=_bearer(owner), json={"enabled": False}, timeout=30)
    assert off.status_code == 200 and off.json()["enabled"] is False
    after = other_host.run_client({"mode": "closed", "url": lan_url})
    assert after["health"] == [0, "ConnectionRefusedError"]
    assert other_host.host_ip not in embedded.runtime.guard.allowed_hosts
    assert httpx.get(url + "/api/health").status_code == 200  # the loopback listener is unaffected
