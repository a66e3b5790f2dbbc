"""X-Forwarded-Proto from trusted proxies only (docs/security.md, A2).

Behind nginx terminating TLS the app sees plain HTTP from the proxy. The Origin check of unsafe
requests compares ``Origin`` with ``<scheme>://<Host>``, so the scheme must be the browser's. This pure
ASGI middleware sets ``scope["scheme"]`` from ``X-Forwarded-Proto`` when — and only when — the peer is
one of ``MODELTRAIN_TRUSTED_PROXIES``; anyone else's header is ignored. (The client address is taken
from ``X-Forwarded-For`` where it is used, by :func:`server.security.network_guard.client_address`,
with the same rule.) Installed by ``create_app`` only when trusted proxies are configured.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send


class ForwardedProtoMiddleware:
    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[str]) -> None:
        self.app = app
        self.networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def _trusted(self, scope: Scope) -> bool:
        peer = (scope.get("client") or ("", 0))[0] or ""
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.networks and self._trusted(scope):
            values = [v for k, v in scope["headers"] if k == b"x-forwarded-proto"]
            if len(values) == 1:
                # The last hop's value (nginx sets exactly one): "https" or "http", nothing else.
                proto = values[0].decode("latin-1").split(",")[-1].strip().lower()
                if proto in ("http", "https"):
                    ws = scope["type"] == "websocket"
                    scope = {**scope, "scheme": ("wss" if proto == "https" else "ws") if ws else proto}
        await self.app(scope, receive, send)
