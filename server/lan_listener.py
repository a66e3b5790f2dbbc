"""The desktop host's LAN listener: a second uvicorn listener of an :class:`EmbeddedServer`.

:class:`LanController` opens and closes it at run time on the server's own event loop, so the LAN
listener serves the *same* app instance as the loopback one; requests arriving on it are tagged
``lan`` (the desktop token and desktop sessions count only on loopback). While it is open, the
machine's addresses and host names are added to the Host allow-list, and removed again when it closes.
The choice (on/off, address, port) is saved as a 0600 JSON file in the data directory; anything
unreadable there means "off" (docs/security.md, A5).

The LAN listener speaks HTTPS with a certificate from this install's own CA
(:mod:`server.security.local_ca`); :mod:`server.lan_tls` says how one port serves TLS and plain HTTP (a
redirect and the CA download only). The loopback listener stays plain HTTP.

The host registers the controller as ``runtime.lan`` (:meth:`EmbeddedServer.enable_lan_control`);
``server.services.lan`` only calls it through its ``LanControl`` protocol.
"""

from __future__ import annotations

import datetime as dt
import errno
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from server.errors import Conflict, InvalidInput
from server.lan_tls import CA_PATH, LanServer, PlainHttp, tls_context
from server.listener import ListenerApp, ReadyServer, bind_listener, host_for_url, uvicorn_config
from server.security import desktop_token, local_ca
from server.security.network_guard import LOOPBACK_HOSTS
from server.security.secret_store import ensure_private_dir, write_private_file

if TYPE_CHECKING:
    from server.embedded import EmbeddedServer

log = logging.getLogger(__name__)

STATE_FILE = "lan.json"


def _normal_ip(value: str) -> str | None:
    try:
        ip = ipaddress.ip_address(value.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None
    if ip.is_loopback or (ip.version == 6 and ip.is_link_local):
        return None
    return str(ip)


def interface_addresses(bind_host: str) -> list[str]:
    """The machine's addresses a LAN client may use for ``bind_host`` (loopback excluded)."""
    if bind_host not in ("0.0.0.0", "::"):
        return [str(ipaddress.ip_address(bind_host))]
    families = {socket.AF_INET} if bind_host == "0.0.0.0" else {socket.AF_INET, socket.AF_INET6}
    result: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in families:
                found = _normal_ip(addr.address)
                if found and found not in result:
                    result.append(found)
    return result


def host_names() -> list[str]:
    """This machine's name (and its mDNS ``.local`` form); no DNS look-ups."""
    name = socket.gethostname().strip().lower().rstrip(".")
    names = [name] if name and name not in LOOPBACK_HOSTS else []
    if names and "." not in name:
        names.append(f"{name}.local")
    return names


def _preferred(addresses: list[str]) -> str | None:
    def rank(addr: str) -> tuple[int, int]:
        ip = ipaddress.ip_address(addr)
        return (0 if ip.version == 4 else 1, 0 if ip.is_private and not ip.is_link_local else 1)

    return min(addresses, key=rank) if addresses else None


class LanController:
    """Opens/closes the LAN listener of an :class:`EmbeddedServer`; persists the choice (0600 JSON)."""

    def __init__(self, embedded: EmbeddedServer) -> None:
        self._embedded = embedded
        self._lock = threading.RLock()
        self._server: ReadyServer | None = None
        self._sock: socket.socket | None = None
        self._future: Future[None] | None = None
        self._host: str | None = None
        self._port: int | None = None
        self._addresses: list[str] = []
        self._added_hosts: set[str] = set()
        self._error: str | None = None
        self._cert: local_ca.ServerCertificate | None = None

    @property
    def state_file(self) -> Path:
        return self._embedded.settings.data_dir / STATE_FILE

    # ---- persistence ------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        """The saved choice; anything unreadable means "off" (docs/security.md, A5: corrupted -> loopback
        only)."""
        defaults = {
            "enabled": False,
            "host": self._embedded.settings.lan_host,
            "port": self._embedded.settings.lan_port,
        }
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return defaults
        except (OSError, ValueError):
            log.warning("the LAN setting in %s is unreadable; LAN access stays off", self.state_file)
            return defaults
        if not isinstance(data, dict):
            return defaults
        host: Any = data.get("host")
        port: Any = data.get("port")
        try:
            host = str(ipaddress.ip_address(str(host)))
            port = int(port)
            if not 0 <= port <= 65535:
                raise ValueError
        except (ValueError, TypeError):
            return defaults
        return {"enabled": data.get("enabled") is True, "host": host, "port": port}

    def _save(self, enabled: bool, host: str, port: int) -> None:
        ensure_private_dir(self._embedded.settings.data_dir)
        write_private_file(
            self.state_file, json.dumps({"enabled": enabled, "host": host, "port": port}) + "\n"
        )

    # ---- API used by services/lan.py ---------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self._lock:
            enabled = self._server is not None
            if enabled:
                assert self._host is not None
                assert self._port is not None
                urls = [f"https://{host_for_url(a)}:{self._port}" for a in self._addresses]
                best = _preferred(self._addresses)
                url = f"https://{host_for_url(best)}:{self._port}" if best else None
                cert = self._cert
                assert cert is not None
                return {
                    "enabled": True,
                    "url": url,
                    "host": self._host,
                    "port": self._port,
                    "urls": urls,
                    "addresses": sorted(self._added_hosts | set(self._addresses)),
                    "error": None,
                    "ca_fingerprint_sha256": cert.ca_fingerprint_sha256,
                    "ca_download_url": f"http://{host_for_url(best)}:{self._port}{CA_PATH}" if best else None,
                    "ca_download_path": CA_PATH,
                    "certificate_expires_at": cert.not_after,
                }
            saved = self.load_state()
            return {
                "enabled": False,
                "url": None,
                "host": saved["host"],
                "port": saved["port"],
                "urls": [],
                "addresses": [],
                "error": self._error,
            }

    def enable(self, host: str | None = None, port: int | None = None) -> dict[str, Any]:
        saved = self.load_state()
        host = host if host is not None else saved["host"]
        port = port if port is not None else saved["port"]
        with self._lock:
            if self._server is not None and self._host == host and (port in (0, self._port)):
                return self.status()
            self.close(persist=False)
            self._open(host, port)
            self._save(True, host, self._port or port)
            return self.status()

    def disable(self) -> dict[str, Any]:
        with self._lock:
            self.close(persist=True)
            return self.status()

    def ca_certificate(self) -> bytes | None:
        """The CA certificate (DER) that devices install to trust the LAN listener; None before first use."""
        return local_ca.ca_certificate_der(self._embedded.settings.data_dir)

    def renew_certificate(self, now: dt.datetime | None = None) -> bool:
        """Reissue the server certificate if it expires soon or the machine's addresses changed (new
        Wi-Fi address; those join the Host allow-list too); the open listener uses it for new
        connections. Returns whether a new certificate was issued. ``now`` is for tests."""
        with self._lock:
            server, host = self._server, self._host
            if not isinstance(server, LanServer) or host is None:
                return False
            addresses, names = interface_addresses(host), host_names()
            cert = local_ca.ensure_server_certificate(
                self._embedded.settings.data_dir, addresses + names, now=now
            )
            if cert.issued:
                server.context.load_cert_chain(cert.cert_file, cert.key_file)
                log.warning("LAN certificate renewed (valid until %s)", cert.not_after)
            guard = self._embedded.runtime.guard
            new = {h for h in [*addresses, *names] if h not in guard.allowed_hosts and "*" not in h}
            guard.allowed_hosts.update(new)
            self._added_hosts |= new
            self._addresses, self._cert = addresses, cert
            return cert.issued

    def restore(self) -> None:
        """At start-up: reopen the listener if LAN access was on. Failures are logged, never fatal."""
        saved = self.load_state()
        if not saved["enabled"]:
            return
        try:
            with self._lock:
                self._open(saved["host"], saved["port"])
        except Exception as exc:  # a DomainError or OSError: report through status(), keep running
            message = getattr(exc, "message", None) or str(exc)
            with self._lock:
                self._error = message
            log.warning("LAN access could not be restored: %s", message)

    # ---- internals --------------------------------------------------------------------------

    def _open(self, host: str, port: int) -> None:
        embedded = self._embedded
        if embedded.loop is None:
            raise Conflict("the server is not running", code="lan_unavailable")
        try:
            sock = bind_listener(host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise Conflict(
                    f"port {port} on {host} is already in use; choose another port", code="port_in_use"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InvalidInput(
                    f"{host} is not an address of this computer", code="address_unavailable"
                ) from None
            if exc.errno == errno.EACCES:
                raise Conflict(
                    f"port {port} needs administrator rights; choose a port above 1023",
                    code="port_not_permitted",
                ) from None
            raise Conflict(
                f"cannot listen on {host}:{port}: {exc.strerror}", code="lan_bind_failed"
            ) from None
        actual_port = sock.getsockname()[1]
        addresses = interface_addresses(host)
        try:
            cert = local_ca.ensure_server_certificate(embedded.settings.data_dir, addresses + host_names())
            context = tls_context(cert)
        except (local_ca.LocalCaError, OSError, ssl.SSLError) as exc:
            sock.close()
            log.error("LAN access stays off: %s", exc)
            raise Conflict(str(exc), code="lan_certificate_unavailable") from None
        guard = embedded.runtime.guard
        wanted = set(addresses) | set(host_names())
        added = {h for h in wanted if h not in guard.allowed_hosts and "*" not in h}
        guard.allowed_hosts.update(added)
        server = LanServer(
            uvicorn_config(
                ListenerApp(embedded.app, desktop_token.LAN_LISTENER), embedded.settings, lifespan="off"
            ),
            context,
            lambda: PlainHttp(actual_port, guard, lambda: cert.ca_der),
            self.renew_certificate,
        )
        future = embedded.call_soon(lambda: server.serve(sockets=[sock]))
        deadline = time.monotonic() + 10
        while not server.ready.wait(0.05):
            if future.done() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                guard.allowed_hosts.difference_update(added)
                raise Conflict(
                    f"the LAN listener on {host}:{actual_port} did not start", code="lan_bind_failed"
                )
        self._server, self._sock, self._future = server, sock, future
        self._host, self._port, self._addresses, self._added_hosts = host, actual_port, addresses, added
        self._error, self._cert = None, cert
        log.warning("LAN access on: listening on %s:%s", host_for_url(host), actual_port)

    def close(self, *, persist: bool) -> None:
        """Close the LAN socket at once (in-flight requests finish); drop the added Host names."""
        with self._lock:
            server, sock = self._server, self._sock
            if server is not None and sock is not None:
                server.should_exit = True
                # uvicorn closes the listening socket on its next tick (<= 0.1 s); wait for that, not for
                # in-flight requests (the request turning LAN off may itself arrive over the LAN).
                deadline = time.monotonic() + 2
                while (
                    sock.fileno() != -1
                    and time.monotonic() < deadline
                    and self._future
                    and not self._future.done()
                ):
                    time.sleep(0.01)
                if sock.fileno() != -1:
                    sock.close()
                self._embedded.runtime.guard.allowed_hosts.difference_update(self._added_hosts)
                log.warning("LAN access off: listener on %s:%s closed", self._host, self._port)
            if persist and self._host is not None and self._port is not None:
                self._save(False, self._host, self._port)
            elif persist:
                saved = self.load_state()
                if saved["enabled"]:
                    self._save(False, saved["host"], saved["port"])
            self._server = self._sock = None
            self._added_hosts = set()
            self._addresses = []
