from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, status

from server.api.openapi import raises
from server.api.paging import PageParam
from server.deps import CurrentUser, SessionDep
from server.errors import Conflict, NotFound
from server.schemas.model_config import ModelConfigCreate, ModelConfigPage, ModelConfigRead, ModelConfigUpdate
from server.services import model_configs as model_configs_service

#: 404: the provider or base model a preset names; 409: a name already taken.
router = APIRouter(prefix="/api/model-configs", tags=["model-configs"], responses=raises(NotFound, Conflict))


@router.get("", response_model=ModelConfigPage, summary="List presets: the shared ones and your own")
def list_model_configs(
    user: CurrentUser, session: SessionDep, page: PageParam = 1, size: int = Query(50, ge=1, le=200)
) -> ModelConfigPage:
    rows, total = model_configs_service.list_model_configs(session, user, page=page, size=size)
    return ModelConfigPage(
        items=[model_configs_service.to_read(user, c) for c in rows], total=total, page=page, size=size
    )


@router.post(
    "",
    response_model=ModelConfigRead,
    status_code=status.HTTP_201_CREATED,
    summary="Add a preset (personal; shared with everyone: admin)",
)
def create_model_config(body: ModelConfigCreate, user: CurrentUser, session: SessionDep) -> ModelConfigRead:
    config = model_configs_service.create_model_config(session, user, body)
    return model_configs_service.to_read(user, config)


@router.post(
    "/{config_id}/duplicate",
    response_model=ModelConfigRead,
    status_code=status.HTTP_201_CREATED,
    summary="Copy a preset you can see into a new personal one",
)
def duplicate_model_config(config_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> ModelConfigRead:
    config = model_configs_service.duplicate_model_config(session, user, config_id)
    return model_configs_service.to_read(user, config)


@router.patch(
    "/{config_id}", response_model=ModelConfigRead, summary="Change a preset (yours; shared ones: admin)"
)
def update_model_config(
    config_id: uuid.UUID, body: ModelConfigUpdate, user: CurrentUser, session: SessionDep
) -> ModelConfigRead:
    config = model_configs_service.update_model_config(session, user, config_id, body)
    return model_configs_service.to_read(user, config)


@router.delete(
    "/{config_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a preset (yours; shared ones: admin)",
)
def delete_model_config(config_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> None:
    model_configs_service.delete_model_config(session, user, config_id)
