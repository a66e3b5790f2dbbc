from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, status

from server.deps import AdminUser, CurrentUser, SessionDep
from server.schemas.model_config import ModelConfigCreate, ModelConfigPage, ModelConfigRead, ModelConfigUpdate
from server.services import model_configs as model_configs_service

router = APIRouter(prefix="/api/model-configs", tags=["model-configs"])


@router.get("", response_model=ModelConfigPage, summary="List model configurations")
def list_model_configs(
    user: CurrentUser, session: SessionDep, page: int = Query(1, ge=1), size: int = Query(50, ge=1, le=200)
) -> ModelConfigPage:
    rows, total = model_configs_service.list_model_configs(
        session, include_disabled=user.role == "admin", page=page, size=size
    )
    return ModelConfigPage(
        items=[ModelConfigRead.model_validate(c) for c in rows], total=total, page=page, size=size
    )


@router.post(
    "",
    response_model=ModelConfigRead,
    status_code=status.HTTP_201_CREATED,
    summary="Add a configuration (admin)",
)
def create_model_config(body: ModelConfigCreate, _: AdminUser, session: SessionDep) -> ModelConfigRead:
    return ModelConfigRead.model_validate(model_configs_service.create_model_config(session, body))


@router.patch("/{config_id}", response_model=ModelConfigRead, summary="Change a configuration (admin)")
def update_model_config(
    config_id: uuid.UUID, body: ModelConfigUpdate, _: AdminUser, session: SessionDep
) -> ModelConfigRead:
    return ModelConfigRead.model_validate(model_configs_service.update_model_config(session, config_id, body))


@router.delete(
    "/{config_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a configuration (admin)"
)
def delete_model_config(config_id: uuid.UUID, _: AdminUser, session: SessionDep) -> None:
    model_configs_service.delete_model_config(session, config_id)
