"""Limits of users and API keys: read (with use and renewal) and set (``null`` = unlimited)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from server.deps import AdminUser, AuditCtx, CurrentUser, RuntimeDep, SessionDep
from server.schemas.limits import LimitKind, LimitsRead, LimitsUpdate
from server.services import limits as limits_service

router = APIRouter(prefix="/api", tags=["limits"])


@router.get("/users/me/limits", response_model=LimitsRead, summary="Your limits, use and renewal times")
def my_limits(user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> LimitsRead:
    return LimitsRead.model_validate(limits_service.user_limits(session, runtime, user))


@router.get("/users/{user_id}/limits", response_model=LimitsRead, summary="A user's limits and use (admin)")
def get_user_limits(
    user_id: uuid.UUID, admin: AdminUser, session: SessionDep, runtime: RuntimeDep
) -> LimitsRead:
    return LimitsRead.model_validate(limits_service.user_limits_by_id(session, runtime, admin, user_id))


@router.put("/users/{user_id}/limits", response_model=LimitsRead, summary="Set a user's limits (admin)")
def put_user_limits(
    user_id: uuid.UUID,
    body: LimitsUpdate,
    _: AdminUser,
    session: SessionDep,
    runtime: RuntimeDep,
    ctx: AuditCtx,
) -> LimitsRead:
    return LimitsRead.model_validate(
        limits_service.set_user_limits(session, runtime, user_id, body.changes(), ctx=ctx)
    )


@router.delete(
    "/users/{user_id}/limits/{kind}",
    response_model=LimitsRead,
    summary="Drop a user's own limit of one kind: the role default applies again (admin)",
)
def reset_user_limit(
    user_id: uuid.UUID, kind: LimitKind, _: AdminUser, session: SessionDep, runtime: RuntimeDep, ctx: AuditCtx
) -> LimitsRead:
    return LimitsRead.model_validate(
        limits_service.reset_user_limit(session, runtime, user_id, kind, ctx=ctx)
    )


@router.get("/keys/{key_id}/limits", response_model=LimitsRead, summary="An API key's limits and use")
def get_key_limits(
    key_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> LimitsRead:
    return LimitsRead.model_validate(limits_service.key_limits(session, runtime, user, key_id))


@router.put(
    "/keys/{key_id}/limits", response_model=LimitsRead, summary="Set an API key's limits (owner or admin)"
)
def put_key_limits(
    key_id: uuid.UUID,
    body: LimitsUpdate,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    ctx: AuditCtx,
) -> LimitsRead:
    return LimitsRead.model_validate(
        limits_service.set_key_limits(session, runtime, user, key_id, body.changes(), ctx=ctx)
    )
