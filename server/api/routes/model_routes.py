"""``/api/routes``: explicit routes, one model served by several (provider, model) targets (admin)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from server.deps import AdminUser, SessionDep
from server.schemas.model_route import ModelRouteCreate, ModelRouteList, ModelRouteRead, ModelRouteUpdate
from server.services import model_routes as model_routes_service

router = APIRouter(prefix="/api/routes", tags=["routes"])


@router.get("", response_model=ModelRouteList, summary="List routes (admin)")
def list_routes(_: AdminUser, session: SessionDep) -> ModelRouteList:
    return ModelRouteList(
        items=[ModelRouteRead.from_row(r) for r in model_routes_service.list_routes(session)]
    )


@router.post(
    "", response_model=ModelRouteRead, status_code=status.HTTP_201_CREATED, summary="Add a route (admin)"
)
def create_route(body: ModelRouteCreate, _: AdminUser, session: SessionDep) -> ModelRouteRead:
    return ModelRouteRead.from_row(model_routes_service.create_route(session, body))


@router.get("/{route_id}", response_model=ModelRouteRead, summary="One route (admin)")
def get_route(route_id: uuid.UUID, _: AdminUser, session: SessionDep) -> ModelRouteRead:
    return ModelRouteRead.from_row(model_routes_service.get_route(session, route_id))


@router.patch("/{route_id}", response_model=ModelRouteRead, summary="Change a route (admin)")
def update_route(
    route_id: uuid.UUID, body: ModelRouteUpdate, _: AdminUser, session: SessionDep
) -> ModelRouteRead:
    return ModelRouteRead.from_row(model_routes_service.update_route(session, route_id, body))


@router.delete("/{route_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a route (admin)")
def delete_route(route_id: uuid.UUID, _: AdminUser, session: SessionDep) -> None:
    model_routes_service.delete_route(session, route_id)
