"""API keys for /v1: create (the key is in the response once), list, revoke; the admin creation switch."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from server.api.openapi import raises
from server.deps import AdminUser, AuditCtx, CurrentUser, RuntimeDep, SessionDep
from server.errors import Conflict, NotFound
from server.schemas.api_key import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyRead,
    ApiKeySettings,
    ApiKeySettingsUpdate,
)
from server.services import api_keys as api_keys_service

router = APIRouter(prefix="/api/keys", tags=["keys"], responses=raises(NotFound, Conflict))


@router.post(
    "",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key (the key is returned this once)",
)
def create_key(
    body: ApiKeyCreate, user: CurrentUser, session: SessionDep, runtime: RuntimeDep, ctx: AuditCtx
) -> ApiKeyCreated:
    created = api_keys_service.create_key(
        session,
        runtime.require_key_hasher(),
        user,
        name=body.name,
        expires_at=body.expires_at,
        models=body.models,
        ips=body.ips,
        ctx=ctx,
    )
    read = ApiKeyRead.model_validate(created.key).model_copy(update={"user_email": user.email})
    return ApiKeyCreated(**read.model_dump(), key=created.raw)


@router.get("", response_model=ApiKeyList, summary="Your live keys (admin: everyone's, or one user's)")
def list_keys(user: CurrentUser, session: SessionDep, user_id: uuid.UUID | None = None) -> ApiKeyList:
    rows = api_keys_service.list_keys(session, user, user_id=user_id)
    return ApiKeyList(
        items=[ApiKeyRead.model_validate(k).model_copy(update={"user_email": email}) for k, email in rows]
    )


@router.get("/settings", response_model=ApiKeySettings, summary="Whether the user role may create keys")
def get_settings(_: CurrentUser, session: SessionDep) -> ApiKeySettings:
    return ApiKeySettings(user_creation=api_keys_service.user_creation_enabled(session))


@router.put(
    "/settings", response_model=ApiKeySettings, summary="Switch key creation for the user role (admin)"
)
def put_settings(
    body: ApiKeySettingsUpdate, _: AdminUser, session: SessionDep, ctx: AuditCtx
) -> ApiKeySettings:
    return ApiKeySettings(
        user_creation=api_keys_service.set_user_creation_enabled(session, body.user_creation, ctx=ctx)
    )


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke a key (admin: anyone's)")
def revoke_key(key_id: uuid.UUID, user: CurrentUser, session: SessionDep, ctx: AuditCtx) -> None:
    api_keys_service.revoke_key(session, user, key_id, ctx=ctx)
