from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from server.api.openapi import raises
from server.deps import AuditCtx, ClientIP, PendingUser, RuntimeDep, SessionDep, SettingsDep
from server.errors import Conflict, NotFound, TooManyRequests, Unauthorized
from server.schemas.auth import DesktopPasswordSet, LoginRequest, PasswordChange, TokenRead
from server.schemas.user import UserRead
from server.security import desktop_token
from server.security.network_guard import parse_host
from server.services import auth as auth_service

router = APIRouter(prefix="/api/auth", tags=["auth"])

REFRESH_COOKIE = "modeltrain_refresh"
COOKIE_PATH = "/api/auth"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _set_refresh_cookie(response: Response, request: Request, opened: auth_service.AuthSession) -> None:
    response.set_cookie(
        REFRESH_COOKIE,
        opened.refresh_token,
        expires=opened.refresh_expires_at,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def _clear_refresh_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        REFRESH_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_secure(request)
    )


def _token_read(opened: auth_service.AuthSession, *, desktop: bool = False) -> TokenRead:
    return TokenRead(
        access_token=opened.access_token,
        expires_in=opened.expires_in,
        user=UserRead.model_validate(opened.user),
        desktop=desktop,
    )


@router.post(
    "/login",
    response_model=TokenRead,
    responses=raises(Unauthorized, TooManyRequests),
    summary="Sign in with e-mail and password",
)
def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    runtime: RuntimeDep,
    client: ClientIP,
) -> TokenRead:
    opened = auth_service.login(
        session,
        runtime.settings,
        runtime.require_codec(),
        body.email,
        body.password,
        client=client,
        user_agent=request.headers.get("user-agent", ""),
    )
    _set_refresh_cookie(response, request, opened)
    return _token_read(opened)


@router.post(
    "/refresh",
    response_model=TokenRead,
    responses=raises(Unauthorized),
    summary="Rotate the refresh cookie and get a new access token",
)
def refresh(
    request: Request, response: Response, session: SessionDep, runtime: RuntimeDep, client: ClientIP
) -> TokenRead:
    opened = auth_service.refresh(
        session,
        runtime.settings,
        runtime.require_codec(),
        request.cookies.get(REFRESH_COOKIE),
        client=client,
        user_agent=request.headers.get("user-agent", ""),
    )
    if opened.refresh_token:  # none within the grace window: the other tab's rotation set the cookie
        _set_refresh_cookie(response, request, opened)
    return _token_read(
        opened,
        desktop=desktop_token.desktop_session_allowed(runtime.desktop_token, request.scope, opened.family_id),
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End this session")
def logout(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    auth_service.logout(session, request.cookies.get(REFRESH_COOKIE))
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _clear_refresh_cookie(response, request)
    return response


@router.post(
    "/password", response_model=TokenRead, summary="Change the password (revokes every other session)"
)
def change_password(
    body: PasswordChange,
    request: Request,
    response: Response,
    user: PendingUser,
    session: SessionDep,
    runtime: RuntimeDep,
    ctx: AuditCtx,
) -> TokenRead:
    opened = auth_service.change_password(
        session,
        runtime.settings,
        runtime.require_codec(),
        user,
        body.current_password,
        body.new_password,
        ctx=ctx,
        user_agent=request.headers.get("user-agent", ""),
    )
    _set_refresh_cookie(response, request, opened)
    return _token_read(opened)


@router.post(
    "/desktop",
    response_model=TokenRead,
    responses=raises(Unauthorized, NotFound),
    summary="Desktop app only: sign the owner in with the desktop token",
)
def desktop_sign_in(
    request: Request, response: Response, session: SessionDep, runtime: RuntimeDep, client: ClientIP
) -> TokenRead:
    token = desktop_token.verify_request(
        runtime.desktop_token, request.scope, parse_host(request.headers.get("host", ""))
    )
    opened, family = auth_service.desktop_login(
        session,
        runtime.settings,
        runtime.require_codec(),
        client=client,
        user_agent=request.headers.get("user-agent", ""),
    )
    token.remember(family)
    _set_refresh_cookie(response, request, opened)
    return _token_read(opened, desktop=True)


@router.post(
    "/desktop/password",
    response_model=TokenRead,
    responses=raises(Unauthorized, NotFound, Conflict),
    summary="Desktop app only: set the initial password",
)
def desktop_set_password(
    body: DesktopPasswordSet,
    request: Request,
    response: Response,
    user: PendingUser,
    session: SessionDep,
    runtime: RuntimeDep,
    ctx: AuditCtx,
) -> TokenRead:
    desktop_token.require_desktop_session(runtime.desktop_token, request.scope, request.state.session_id)
    opened = auth_service.set_initial_password(
        session,
        runtime.settings,
        runtime.require_codec(),
        user,
        body.new_password,
        ctx=ctx,
        user_agent=request.headers.get("user-agent", ""),
    )
    _set_refresh_cookie(response, request, opened)
    return _token_read(opened)
