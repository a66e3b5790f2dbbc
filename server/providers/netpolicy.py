"""Which upstream addresses may be contacted (docs/security.md, D3).

Loopback and private addresses are fine (local Ollama, LM Studio, llama.cpp on the LAN). Never:
link-local / cloud metadata, unspecified, multicast, reserved, "this network". Addresses hidden inside
IPv6 forms (IPv4-mapped, NAT64, 6to4) are judged by the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Metadata services outside the link-local ranges (AWS IPv6 IMDS, Alibaba Cloud).
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPAT = ipaddress.ip_network("::/96")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


class BlockedAddress(ValueError):
    """The destination is not allowed; ``str()`` says why."""


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` may never be contacted, or ``None`` when it may."""
    for candidate in (ip, embedded_ipv4(ip)):
        if candidate is None:
            continue
        this_network = isinstance(candidate, ipaddress.IPv4Address) and candidate in _THIS_NETWORK
        if candidate.is_unspecified or this_network:
            return "an unspecified address (0.0.0.0 or ::)"
        if candidate.is_link_local or candidate in METADATA_ADDRESSES:
            return "a link-local or cloud-metadata address"
        if candidate.is_multicast:
            return "a multicast address"
        if isinstance(candidate, ipaddress.IPv4Address) and (
            candidate.is_reserved or candidate.packed == b"\xff" * 4
        ):
            return "a reserved address"
    return None


def is_local(ip: IPAddress) -> bool:
    """Loopback or private (RFC 1918, ULA...): plain HTTP is acceptable there."""
    inner = embedded_ipv4(ip) or ip
    return inner.is_loopback or inner.is_private


def looks_like_obfuscated_ipv4(host: str) -> bool:
    """``2130706433``, ``0x7f.1``, ``127.1``, ``0177.0.0.1``: numeric forms a URL parser may read as IPv4
    but that are not the usual dotted quad. Such hosts are refused rather than guessed at."""
    labels = host.rstrip(".").split(".")
    if not labels or not _NUMERIC_LABEL.match(labels[-1]):
        return False
    try:
        canonical = str(ipaddress.IPv4Address(host))
    except ValueError:
        return True
    return canonical != host


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def addresses_of(infos: Iterable[tuple]) -> list[IPAddress]:
    """The distinct addresses of ``getaddrinfo`` results, in order."""
    out: list[IPAddress] = []
    for info in infos:
        address = literal_address(str(info[4][0]))
        if address is not None and address not in out:
            out.append(address)
    return out


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (blocking; call from a worker thread)."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    return addresses_of(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))


def check_addresses(addresses: Iterable[IPAddress]) -> None:
    for address in addresses:
        reason = blocked_reason(address)
        if reason:
            raise BlockedAddress(f"the host resolves to {reason}, which is never contacted")
