"""Metrics: ``GET /api/metrics`` (admin, JSON for the UI) and ``GET /metrics`` (Prometheus text).

``/metrics`` is not a public route. It answers an admin bearer token, or — with no Authorization header
at all — a request that is plainly local: the TCP peer is a loopback address, the Host is a loopback
name, the peer is not a configured trusted proxy (a reverse proxy on the same machine forwards remote
clients from 127.0.0.1), no forwarding header is present, and it did not arrive on the LAN listener.
So a local Prometheus/node agent can scrape without a token, and nothing remote can.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from server.api.openapi import raises
from server.deps import AdminUser, RuntimeDep, SessionDep, authenticate_admin
from server.errors import Unauthorized
from server.schemas.metric import MetricsRead
from server.security import desktop_token
from server.security.network_guard import LOOPBACK_HOSTS, parse_host
from server.services import metrics as metrics_service
from server.services import usage as usage_service

router = APIRouter(tags=["metrics"], responses=raises(Unauthorized))  # /metrics signs in only when not local
_FORWARDING_HEADERS = (b"x-forwarded-for", b"x-forwarded-host", b"x-real-ip", b"forwarded")


def _is_loopback_ip(value: str) -> bool:
    try:
        return ipaddress.ip_address(value.strip("[]")).is_loopback
    except ValueError:
        return False


def local_scrape_allowed(request: Request, trusted_proxies: list[str]) -> bool:
    scope = request.scope
    peer = (scope.get("client") or ("", 0))[0] or ""
    if not _is_loopback_ip(peer):
        return False
    if scope.get(desktop_token.LISTENER_SCOPE_KEY) == desktop_token.LAN_LISTENER:
        return False
    for proxy in trusted_proxies:
        if ipaddress.ip_address(peer.strip("[]")) in ipaddress.ip_network(proxy, strict=False):
            return False
    headers = scope["headers"]
    if any(key in _FORWARDING_HEADERS for key, _ in headers):
        return False
    hosts = [v for k, v in headers if k == b"host"]
    return len(hosts) == 1 and parse_host(hosts[0].decode("latin-1")) in LOOPBACK_HOSTS


async def metrics_access(request: Request, runtime: RuntimeDep, session: SessionDep) -> None:
    """A plainly local request without any Authorization header, or what :data:`AdminUser` accepts. The
    desktop app has no local scrape: other OS users share a desktop's loopback (docs/security.md, A6)."""
    if (
        not runtime.settings.desktop_mode
        and not request.headers.getlist("authorization")
        and local_scrape_allowed(request, runtime.settings.trusted_proxies)
    ):
        return
    await authenticate_admin(request, runtime, session)


def _collector(runtime: RuntimeDep) -> metrics_service.MetricsCollector:
    return metrics_service.get_collector(runtime)


@router.get(
    "/api/metrics",
    response_model=MetricsRead,
    summary="This instance's metrics, statuses and history, and every live instance's figures (admin)",
)
def get_metrics(_: AdminUser, runtime: RuntimeDep) -> MetricsRead:
    return MetricsRead.model_validate(metrics_service.deployment_report(runtime))


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics (admin token, or a local scrape from loopback)",
)
def prometheus(_: Annotated[None, Depends(metrics_access)], runtime: RuntimeDep) -> PlainTextResponse:
    return PlainTextResponse(
        metrics_service.render_prometheus(_collector(runtime)) + usage_service.render_prometheus(runtime),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
