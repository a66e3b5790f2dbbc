"""All API routers. Public routes (no bearer token) are listed in PUBLIC_ROUTES; a test enforces it."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.routes import (  # operations
    alerts,
    auth,
    backups,
    chat,
    conversations,
    health,
    lan,
    logs,
    metrics,
    model_configs,
    models,
    ollama,
    providers,
    users,
)

#: (method, path) pairs reachable without a bearer token. Everything else must depend on auth.
PUBLIC_ROUTES = frozenset(
    {
        ("POST", "/api/auth/login"),
        ("POST", "/api/auth/refresh"),
        ("POST", "/api/auth/logout"),
        ("POST", "/api/auth/desktop"),
        ("GET", "/api/health"),
        ("GET", "/api/health/ready"),
        ("GET", "/api/lan/ca.crt"),
    }
)


def build_api_router() -> APIRouter:
    router = APIRouter()
    for module in (
        health,
        auth,
        users,
        lan,
        conversations,
        chat,
        ollama,
        providers,
        model_configs,
        models,
        backups,
        logs,
        metrics,
        alerts,
    ):
        router.include_router(module.router)
    return router
