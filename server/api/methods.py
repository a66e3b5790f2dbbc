"""Which methods a path serves, for 405 answers that carry ``Allow`` (RFC 9110, section 15.5.6).

- A path some route names literally (``/api/users/me``) belongs to those routes: a request with another
  method is a 405 from :class:`LiteralPathMethods`, before a templated route (``/api/users/{user_id}``)
  could take ``me`` for an id and answer 403 or 422.
- Otherwise a method no route of the path serves falls through to the web UI, mounted at ``/`` after the
  API; ``server/static.py`` answers 405 there with the methods of the templated routes that match.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


def route_methods(scope: Scope, path: str) -> tuple[set[str], set[str]]:
    """The methods of the routes whose path is exactly ``path``, and of those whose parameters match it."""
    literal: set[str] = set()
    templated: set[str] = set()
    pending = list(getattr(getattr(scope.get("app"), "router", None), "routes", ()))
    while pending:
        route = pending.pop()
        if isinstance(route, Route):
            if route.methods and route.path_regex.match(path):
                (templated if route.param_convertors else literal).update(route.methods)
            continue
        inner = getattr(route, "original_router", None)  # a router FastAPI included as a node of its own
        if inner is not None:
            pending.extend(getattr(inner, "routes", ()))
    return literal, templated


def allowed_methods(scope: Scope, path: str) -> list[str]:
    """What ``Allow`` lists for ``path``: a literal route's methods win over a templated one's."""
    literal, templated = route_methods(scope, path)
    return sorted(literal or templated)


def method_not_allowed(path: str, allowed: list[str]) -> Response:
    """405 with ``Allow``: ``{"code","message","detail"}``, or OpenAI's error shape on ``/v1``."""
    headers = {"Allow": ", ".join(allowed)}
    if path == "/v1" or path.startswith("/v1/"):
        error = {
            "message": "method not allowed",
            "type": "invalid_request_error",
            "code": "method_not_allowed",
        }
        return JSONResponse({"error": {**error, "param": None}}, 405, headers=headers)
    body = {"code": "method_not_allowed", "message": "method not allowed", "detail": None}
    return JSONResponse(body, 405, headers=headers)


def _literal_paths(scope: Scope) -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    pending = list(getattr(getattr(scope.get("app"), "router", None), "routes", ()))
    while pending:
        route = pending.pop()
        if isinstance(route, Route):
            if route.methods and not route.param_convertors:
                table.setdefault(route.path, set()).update(route.methods)
            continue
        inner = getattr(route, "original_router", None)
        if inner is not None:
            pending.extend(getattr(inner, "routes", ()))
    return {path: frozenset(methods) for path, methods in table.items()}


class LiteralPathMethods:
    """ASGI middleware: a method the routes of a literal path do not serve is a 405 with ``Allow`` (one
    dictionary lookup per request; the table is built from the app's routes on the first request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._table: dict[str, frozenset[str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self._table is None:
                self._table = _literal_paths(scope)
            allowed = self._table.get(scope["path"])
            method = scope["method"]
            if allowed is not None and method not in allowed and not (method == "HEAD" and "GET" in allowed):
                await method_not_allowed(scope["path"], sorted(allowed))(scope, receive, send)
                return
        await self.app(scope, receive, send)
