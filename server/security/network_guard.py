"""Network guard: the first middleware every request meets.

In order: Host allow-list (DNS rebinding), request-body size limit, cross-origin/CSRF policy for
unsafe methods, then security headers on every response. Pure ASGI so streaming responses pass
through untouched.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


def parse_host(value: str) -> str | None:
    """The host part of a Host header value (lower-case, brackets removed), or None if malformed."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/\\@?#% \t"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        host, rest = value[1:end], value[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, sep, rest = value.partition(":")
        rest = sep + rest
        if not host:
            return None
    if rest and (not rest.startswith(":") or not rest[1:].isdigit() or not 0 < int(rest[1:]) < 65536):
        return None
    return host


@dataclass
class GuardPolicy:
    """What the guard accepts. ``allowed_hosts`` can grow at run time (LAN access)."""

    allowed_hosts: set[str] = field(default_factory=lambda: set(LOOPBACK_HOSTS))
    cors_origins: frozenset[str] = frozenset()
    max_body_bytes: int = 2 * 1024 * 1024
    #: Path -> larger body limit (uploads).
    body_limit_overrides: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(
        cls, extra_hosts: Iterable[str], cors_origins: Iterable[str], max_body_bytes: int
    ) -> GuardPolicy:
        hosts = set(LOOPBACK_HOSTS)
        for h in extra_hosts:
            try:
                hosts.add(str(ipaddress.ip_address(h.strip("[]"))))
            except ValueError:
                parsed = parse_host(h)
                if parsed:
                    hosts.add(parsed)
        return cls(allowed_hosts=hosts, cors_origins=frozenset(cors_origins), max_body_bytes=max_body_bytes)

    def host_allowed(self, host: str | None) -> bool:
        return host is not None and host in self.allowed_hosts


def _error_body(code: str, message: str, path: str = "") -> bytes:
    if path.startswith("/v1/"):  # the OpenAI-compatible API answers in OpenAI's shape (server/api/v1)
        kind = "permission_error" if code.endswith("_not_allowed") else "invalid_request_error"
        return json.dumps({"error": {"message": message, "type": kind, "code": code, "param": None}}).encode()
    return json.dumps({"code": code, "message": message, "detail": None}).encode()


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    path: str = "",
) -> None:
    body = _error_body(code, message, path)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *SECURITY_HEADERS,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class NetworkGuardMiddleware:
    def __init__(self, app: ASGIApp, policy: GuardPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        hosts = [v for k, v in headers if k == b"host"]
        raw_path = scope.get("raw_path") or b""
        host = parse_host(hosts[0].decode("latin-1")) if len(hosts) == 1 else None
        # An absolute-form request target (GET http://other/ HTTP/1.1) must not name another host.
        if raw_path[:1] not in (b"/", b"") or not self.policy.host_allowed(host):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send_error(send, 403, "host_not_allowed", "this Host is not allowed", path=scope["path"])
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        method = scope["method"]
        if method in UNSAFE_METHODS:
            problem = self._check_unsafe(scope, host or "")
            if problem:
                status, code, message = problem
                await send_error(send, status, code, message, path=scope["path"])
                return

        path: str = scope["path"]
        limit = self.policy.body_limit_overrides.get(path, self.policy.max_body_bytes)
        content_length = _header(headers, b"content-length")
        if content_length is not None:
            if not content_length.isdigit():
                await send_error(send, 400, "bad_request", "invalid Content-Length", path=path)
                return
            if int(content_length) > limit:
                await send_error(
                    send, 413, "payload_too_large", f"the request body exceeds {limit} bytes", path=path
                )
                return

        is_api = path.startswith(("/api/", "/v1/")) or path in ("/api", "/metrics")
        state = {"started": False, "rejected": False}

        async def guarded_send(message: Message) -> None:
            if state["rejected"]:
                return  # we already answered 413; whatever the app says next is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
                extra = list(SECURITY_HEADERS)
                existing = {k.lower() for k, _ in message.get("headers", [])}
                if is_api and b"cache-control" not in existing:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if state["rejected"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer 413 now and tell the app the client is gone, so it stops reading.
                    if not state["started"]:
                        await send_error(
                            send,
                            413,
                            "payload_too_large",
                            f"the request body exceeds {limit} bytes",
                            path=path,
                        )
                    state["rejected"] = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited_receive, guarded_send)

    def _check_unsafe(self, scope: Scope, host: str) -> tuple[int, str, str] | None:
        headers = scope["headers"]
        origin = _header(headers, b"origin")
        if origin is not None:
            if not self._origin_allowed(origin, scope, host):
                return 403, "origin_not_allowed", "cross-origin requests are not allowed"
        else:
            site = _header(headers, b"sec-fetch-site")
            if site in ("cross-site", "same-site"):
                return 403, "origin_not_allowed", "cross-origin requests are not allowed"
        authorization = _header(headers, b"authorization") or ""
        if not authorization.lower().startswith("bearer "):
            # Without a bearer token the request rides on cookies (refresh, logout) or on nothing
            # (login): it must not be a CORS "simple" request, so it must declare JSON.
            ctype = (_header(headers, b"content-type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return 415, "unsupported_media_type", "send the request body as application/json"
        return None

    def _origin_allowed(self, origin: str, scope: Scope, host: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if origin in self.policy.cors_origins:
            return True
        scheme = scope.get("scheme", "http")
        host_header = (_header(scope["headers"], b"host") or "").strip().lower()
        return origin == f"{scheme}://{host_header}" and self.policy.host_allowed(host)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def client_address(scope: Scope, trusted_proxies: Iterable[str]) -> str:
    """The client's IP: the peer, or the right-most untrusted X-Forwarded-For hop behind trusted proxies."""
    peer = (scope.get("client") or ("", 0))[0] or ""
    networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in networks)

    if not networks or not trusted(peer):
        return peer
    forwarded = _header(scope["headers"], b"x-forwarded-for")
    if not forwarded:
        return peer
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not trusted(hop):
            return hop
    return hops[0] if hops else peer
