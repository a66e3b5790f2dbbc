from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, status

from server.api.openapi import raises
from server.api.paging import PageParam
from server.deps import AdminUser, AuditCtx, PendingUser, SessionDep, SettingsDep
from server.errors import Conflict
from server.schemas.user import PasswordReset, UserCreate, UserPage, UserRead, UserSelfUpdate, UserUpdate
from server.services import users as users_service

router = APIRouter(
    prefix="/api/users", tags=["users"], responses=raises(Conflict)
)  # e-mail taken, last admin


@router.get("/me", response_model=UserRead, summary="The signed-in user")
def me(user: PendingUser) -> UserRead:
    return UserRead.model_validate(user)


@router.patch("/me", response_model=UserRead, summary="Change your display name")
def update_me(body: UserSelfUpdate, user: PendingUser, session: SessionDep) -> UserRead:
    return UserRead.model_validate(users_service.set_display_name(session, user, body.display_name))


@router.get("", response_model=UserPage, summary="List users (admin)")
def list_users(
    _: AdminUser, session: SessionDep, page: PageParam = 1, size: int = Query(50, ge=1, le=200)
) -> UserPage:
    rows, total = users_service.list_users(session, page, size)
    return UserPage(items=[UserRead.model_validate(u) for u in rows], total=total, page=page, size=size)


@router.post(
    "", response_model=UserRead, status_code=status.HTTP_201_CREATED, summary="Create a user (admin)"
)
def create_user(
    body: UserCreate, _: AdminUser, session: SessionDep, settings: SettingsDep, ctx: AuditCtx
) -> UserRead:
    return UserRead.model_validate(users_service.create_user(session, settings, body, ctx=ctx))


@router.get("/{user_id}", response_model=UserRead, summary="One user (admin)")
def get_user(user_id: uuid.UUID, _: AdminUser, session: SessionDep) -> UserRead:
    return UserRead.model_validate(users_service.get_user(session, user_id))


@router.patch("/{user_id}", response_model=UserRead, summary="Change role, status or name (admin)")
def update_user(
    user_id: uuid.UUID, body: UserUpdate, _: AdminUser, session: SessionDep, ctx: AuditCtx
) -> UserRead:
    return UserRead.model_validate(users_service.update_user(session, user_id, body, ctx=ctx))


@router.post("/{user_id}/password", response_model=UserRead, summary="Reset a user's password (admin)")
def reset_password(
    user_id: uuid.UUID,
    body: PasswordReset,
    _: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
    ctx: AuditCtx,
) -> UserRead:
    return UserRead.model_validate(
        users_service.reset_password(session, settings, user_id, body.new_password, ctx=ctx)
    )


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a user (admin)")
def delete_user(
    user_id: uuid.UUID, _: AdminUser, session: SessionDep, settings: SettingsDep, ctx: AuditCtx
) -> None:
    users_service.delete_user(session, settings, user_id, ctx=ctx)
