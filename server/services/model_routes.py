"""Explicit routes (admin): one model, by its own name, served by several targets (provider, model,
priority, weight), with the routing, failover and health of server/providers/routed.py.

A route's catalog id is ``route:<route id>`` (services/models.py); its ``/v1`` id is its name
(services/gateway.py). A target whose provider was deleted or is disabled is skipped; a route with no
usable target is not offered.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.db.models import ModelRoute, Provider
from server.errors import Conflict, InvalidInput, NotFound
from server.providers.registry import get_registry
from server.providers.routed import Target, finite_weight
from server.schemas.model_route import ModelRouteCreate, ModelRouteTarget, ModelRouteUpdate
from server.security.secret_store import get_secret_store
from server.services.providers import read_api_key

if TYPE_CHECKING:
    from server.runtime import Runtime


def get_route(session: Session, route_id: uuid.UUID) -> ModelRoute:
    route = session.get(ModelRoute, route_id)
    if route is None:
        raise NotFound("route not found", code="route_not_found")
    return route


def list_routes(session: Session) -> list[ModelRoute]:
    return list(session.scalars(select(ModelRoute).order_by(ModelRoute.name)))


def _check_name_free(session: Session, name: str, exclude: uuid.UUID | None = None) -> None:
    query = select(ModelRoute.id).where(func.lower(ModelRoute.name) == name.lower())
    if exclude is not None:
        query = query.where(ModelRoute.id != exclude)
    if session.scalar(query) is not None:
        raise Conflict("a route with this name already exists", code="route_name_taken")


def _targets(session: Session, targets: list[ModelRouteTarget]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[tuple[uuid.UUID, str]] = set()
    for target in targets:
        if session.get(Provider, target.provider_id) is None:
            raise InvalidInput(
                "a target names a provider that does not exist",
                code="provider_not_found",
                detail={"field": "targets"},
            )
        if (target.provider_id, target.model) in seen:
            raise InvalidInput(
                "a target is listed twice", code="duplicate_target", detail={"field": "targets"}
            )
        seen.add((target.provider_id, target.model))
        out.append(target.model_dump(mode="json"))
    return out


def create_route(session: Session, data: ModelRouteCreate) -> ModelRoute:
    _check_name_free(session, data.name)
    route = ModelRoute(name=data.name, enabled=data.enabled, targets=_targets(session, data.targets))
    session.add(route)
    session.flush()
    return route


def update_route(session: Session, route_id: uuid.UUID, data: ModelRouteUpdate) -> ModelRoute:
    route = get_route(session, route_id)
    fields = data.model_fields_set
    if "name" in fields and data.name is not None and data.name != route.name:
        _check_name_free(session, data.name, exclude=route.id)
        route.name = data.name
    if "enabled" in fields and data.enabled is not None:
        route.enabled = data.enabled
    if "targets" in fields and data.targets is not None:
        route.targets = _targets(session, data.targets)
    session.flush()
    return route


def delete_route(session: Session, route_id: uuid.UUID) -> None:
    session.delete(get_route(session, route_id))
    session.flush()


# --- resolving --------------------------------------------------------------------------------------------


def usable_targets(session: Session, route: ModelRoute) -> list[tuple[Provider, dict[str, Any]]]:
    """The route's targets whose provider exists and is enabled, in the route's order."""
    out = []
    for raw in route.targets or []:
        try:
            provider = session.get(Provider, uuid.UUID(str(raw.get("provider_id"))))
        except ValueError:
            continue
        if provider is not None and provider.enabled and isinstance(raw.get("model"), str):
            out.append((provider, raw))
    return out


def route_targets(session: Session, runtime: Runtime, route: ModelRoute) -> list[Target]:
    """Routing targets with their adapters (blocking: the secret store; call from a worker thread)."""
    registry = get_registry(runtime)
    secrets = get_secret_store(runtime)
    return [
        Target(
            key=str(provider.id),
            name=provider.name,
            adapter=registry.build(provider, read_api_key(secrets, provider)),
            upstream_model=raw["model"],
            priority=int(raw.get("priority") or 0),
            weight=finite_weight(float(raw.get("weight") or 1.0)),
        )
        for provider, raw in usable_targets(session, route)
    ]
