"""All API routers. Public routes (no bearer token) are listed in PUBLIC_ROUTES; a test enforces it."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.routes import (  # operations
    alert_channels,
    alerts,
    audit,
    auth,
    backups,
    chat,
    conversations,
    files,
    gguf_import,
    health,
    hosts,
    keys,
    knowledge,
    lan,
    limits,
    logs,
    metrics,
    model_configs,
    model_routes,
    models,
    ollama,
    ollama_install,
    onboarding,
    providers,
    usage,
    users,
)
from server.api.v1 import routes as v1_routes

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
        # /v1 first: programs call it far more often than people call /api, and routes match in order.
        v1_routes,  # /v1: API keys (server/api/v1_auth.py), not the UI's bearer tokens
        health,
        auth,
        limits,  # before users: /api/users/me/limits
        users,
        keys,
        lan,
        conversations,
        chat,
        files,
        knowledge,
        ollama_install,
        ollama,
        gguf_import,
        providers,
        hosts,
        model_routes,
        model_configs,
        models,
        onboarding,
        backups,
        logs,
        metrics,
        alerts,
        alert_channels,
        usage,
        audit,
    ):
        router.include_router(module.router)
    return router
