"""Desktop sign-in: a per-process random token that lets the desktop window sign its owner in.

The desktop host builds the app with ``Settings(desktop_mode=True)``; ``create_app`` then creates one
:class:`DesktopToken` in ``runtime.desktop_token``. The Qt web view adds it as the
``X-ModelTrain-Desktop`` header to ``POST /api/auth/desktop`` on our own loopback origin only, so page
JavaScript, URLs and logs never see it. The token is accepted only

* from that header (never a query string, cookie or body),
* on the embedded loopback listener (never the LAN listener), from a loopback peer with a loopback Host,
* compared in constant time.

Sessions opened this way are *desktop sessions*: their refresh-token family ids are remembered here, in
memory, for the life of the process. A desktop session may act while the owner still has the initial
password (the owner proved local presence) but only on the loopback listener; on the LAN listener a
desktop session is not valid at all.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading

from starlette.types import Scope

from server.errors import Forbidden, NotFound, Unauthorized

HEADER = "x-modeltrain-desktop"
#: Scope key set by server.embedded on each listener: "loopback" or "lan".
LISTENER_SCOPE_KEY = "modeltrain.listener"
LOOPBACK_LISTENER = "loopback"
LAN_LISTENER = "lan"


class DesktopToken:
    """The secret plus the set of session families it opened. ``repr`` never shows the secret."""

    def __init__(self, value: str | None = None) -> None:
        self._value = value or secrets.token_urlsafe(32)
        self._families: set[str] = set()
        self._lock = threading.Lock()

    @property
    def value(self) -> str:
        return self._value

    def matches(self, candidate: str | None) -> bool:
        if not candidate:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self._value.encode("utf-8"))

    def remember(self, family_id: str) -> None:
        with self._lock:
            self._families.add(family_id)

    def is_desktop_session(self, family_id: str | None) -> bool:
        if not family_id:
            return False
        with self._lock:
            return family_id in self._families

    @property
    def session_count(self) -> int:
        with self._lock:
            return len(self._families)

    def __repr__(self) -> str:
        return "DesktopToken(<hidden>)"


def _is_loopback_ip(value: str) -> bool:
    try:
        return ipaddress.ip_address(value.strip("[]")).is_loopback
    except ValueError:
        return False


def on_loopback_listener(scope: Scope) -> bool:
    """The request arrived on the embedded loopback listener (not the LAN one, not ``modeltrain serve``)."""
    return scope.get(LISTENER_SCOPE_KEY) == LOOPBACK_LISTENER


def is_local_desktop_request(scope: Scope, host: str | None) -> bool:
    """Loopback listener, loopback peer and loopback Host: the only place the desktop token counts."""
    peer = (scope.get("client") or ("", 0))[0] or ""
    return (
        on_loopback_listener(scope)
        and _is_loopback_ip(peer)
        and host is not None
        and (host == "localhost" or _is_loopback_ip(host))
    )


def header_value(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token from the one ``X-ModelTrain-Desktop`` header; ``None`` if absent or repeated."""
    values = [v for k, v in headers if k == HEADER.encode()]
    if len(values) != 1:
        return None
    return values[0].decode("latin-1").strip()


def desktop_session_allowed(token: DesktopToken | None, scope: Scope, session_id: str | None) -> bool:
    """True for a desktop session used on the loopback listener (may skip the initial-password rule)."""
    return token is not None and token.is_desktop_session(session_id) and on_loopback_listener(scope)


def desktop_session_misused(token: DesktopToken | None, scope: Scope, session_id: str | None) -> bool:
    """True for a desktop session presented anywhere but the loopback listener (e.g. from the LAN)."""
    return token is not None and token.is_desktop_session(session_id) and not on_loopback_listener(scope)


def verify_request(token: DesktopToken | None, scope: Scope, host: str | None) -> DesktopToken:
    """Check a ``POST /api/auth/desktop`` request; raise the matching DomainError when it fails."""
    if token is None:
        raise NotFound("no such API endpoint", code="not_found")
    if not is_local_desktop_request(scope, host):
        raise Forbidden(
            "desktop sign-in is only possible inside the desktop app", code="desktop_sign_in_refused"
        )
    if not token.matches(header_value(scope.get("headers") or [])):
        raise Unauthorized("the desktop token is missing or wrong", code="invalid_desktop_token")
    return token


def require_desktop_session(token: DesktopToken | None, scope: Scope, session_id: str | None) -> None:
    if not desktop_session_allowed(token, scope, session_id):
        raise Forbidden("only the desktop app can do this", code="desktop_session_required")
