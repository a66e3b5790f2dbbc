"""Every route outside the public allow-list needs a bearer token (docs/security.md, C3)."""

from __future__ import annotations

import re
import uuid

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from server.api.router import PUBLIC_ROUTES


def api_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every API operation, from the OpenAPI schema the app generates."""
    from fastapi.openapi.utils import get_openapi

    def walk(routes):
        for route in routes:
            if isinstance(route, APIRoute):
                yield route
            inner = getattr(route, "original_router", None) or getattr(route, "routes", None)
            if inner is not None and not isinstance(route, APIRoute):
                yield from walk(inner.routes if hasattr(inner, "routes") else inner)

    routes = list(walk(app.router.routes))
    schema = get_openapi(title="census", version="0", routes=routes)
    pairs = []
    for path, ops in schema["paths"].items():
        for method in ops:
            pairs.append((method.upper(), path))
    return sorted(pairs)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


def test_census_sees_the_known_routes(app) -> None:
    routes = api_routes(app)
    assert ("POST", "/api/auth/login") in routes
    assert ("GET", "/api/users/me") in routes
    assert len(routes) >= 12


def test_public_allow_list_is_exactly_what_is_public(app) -> None:
    assert set(api_routes(app)) >= PUBLIC_ROUTES


def test_every_other_route_answers_401_without_a_token(client: TestClient, app) -> None:
    unguarded = []
    for method, path in api_routes(app):
        if (method, path) in PUBLIC_ROUTES:
            continue
        r = client.request(
            method,
            _concrete(path),
            json={} if method in ("POST", "PUT", "PATCH") else None,
            headers={"Content-Type": "application/json"},
        )
        if r.status_code != 401:
            unguarded.append((method, path, r.status_code))
    assert not unguarded, f"routes reachable without authentication: {unguarded}"


def test_user_role_gets_403_on_admin_routes(client: TestClient, app, user_token: str) -> None:
    from tests.server.conftest import bearer

    admin_only = [
        ("GET", "/api/users"),
        ("POST", "/api/users"),
        ("DELETE", "/api/users/{user_id}"),
        ("PATCH", "/api/users/{user_id}"),
        ("POST", "/api/users/{user_id}/password"),
    ]
    for method, path in admin_only:
        r = client.request(
            method,
            _concrete(path),
            json={} if method in ("POST", "PATCH") else None,
            headers=bearer(user_token),
        )
        assert r.status_code == 403, (method, path, r.status_code)
        assert r.json()["code"] == "admin_required"
