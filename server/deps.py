"""FastAPI dependencies: the runtime, a DB session per request, the current user."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from server.db.models import User
from server.db.session import session_scope
from server.errors import Forbidden, Unauthorized
from server.runtime import Runtime
from server.security import desktop_token
from server.security.api_key_hash import is_api_key
from server.security.network_guard import client_address
from server.services import auth as auth_service
from server.services import ollama_admin
from server.services.audit import AuditContext
from server.services.ollama_admin import OllamaTarget
from server.settings import Settings

# The trivial dependencies are ``async``: FastAPI runs a plain ``def`` dependency in a worker thread,
# a round trip through the thread pool for one attribute read.


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_session(request: Request, runtime: RuntimeDep) -> AsyncIterator[Session]:
    """One session per request: committed when the route returns, rolled back on error.

    GET/HEAD requests read in DEFERRED transactions so they never wait on writers (SQLite WAL).
    This dependency is ``async`` on purpose: the commit at the end runs on the event loop instead of
    waiting for a free worker thread while the transaction still holds SQLite's write lock (a WAL
    commit with synchronous=NORMAL does not fsync, so it is quick). Queries themselves run in the
    sync route's worker thread.
    """
    factory = runtime.session_factory
    if request.method in ("GET", "HEAD") and runtime.read_session_factory is not None:
        factory = runtime.read_session_factory
    with session_scope(factory) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def client_ip(request: Request, runtime: RuntimeDep) -> str:
    return client_address(request.scope, runtime.settings.trusted_proxies)


ClientIP = Annotated[str, Depends(client_ip)]


def _bearer(request: Request) -> str:
    """The one credential channel: ``Authorization: Bearer``. Cookies, query strings and other headers
    never authenticate API calls (docs/security.md, B5 and B8)."""
    values = request.headers.getlist("authorization")
    if len(values) != 1:
        raise Unauthorized("authentication required", code="not_authenticated")
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("authentication required", code="not_authenticated")
    return token.strip()


def _authenticate(request: Request, runtime: Runtime, session: Session, token: str) -> User:
    # Authentication only reads: on SQLite its transaction is DEFERRED even in a write request, so
    # signing a request in never queues behind the writers (streams saving their replies) for the
    # write lock. The route's own transaction, after the commit below, is IMMEDIATE again.
    session.connection(execution_options={"sqlite_begin": "DEFERRED"})
    user, session_id = auth_service.authenticate_access(session, runtime.require_codec(), token)
    if desktop_token.desktop_session_misused(runtime.desktop_token, request.scope, session_id):
        raise Unauthorized("this session is valid only in the desktop app", code="invalid_token")
    request.state.user_id = user.id
    request.state.session_id = session_id
    # End the auth read here, before the route's work (often in a worker thread) begins.
    session.commit()
    return user


async def _authenticated(request: Request, runtime: RuntimeDep, session: SessionDep) -> User:
    token = _bearer(request)
    if is_api_key(token):  # an API key is for /v1 only (docs/security.md, API keys)
        raise Unauthorized("API keys authenticate /v1 only; sign in to use /api", code="api_key_not_accepted")
    if runtime.can_read_inline():  # SQLite: cheaper on the loop than a round trip through a worker thread
        return _authenticate(request, runtime, session, token)
    return await run_in_threadpool(_authenticate, request, runtime, session, token)


async def user_pending_password(user: Annotated[User, Depends(_authenticated)]) -> User:
    """A signed-in user, even one who still has to replace the initial password."""
    return user


async def current_user(
    request: Request, user: Annotated[User, Depends(_authenticated)], runtime: RuntimeDep
) -> User:
    # The desktop owner (desktop session on the loopback listener) is not blocked by the initial password.
    if user.must_change_password and not desktop_token.desktop_session_allowed(
        runtime.desktop_token, request.scope, getattr(request.state, "session_id", None)
    ):
        raise Forbidden(
            "change the initial password before doing anything else", code="password_change_required"
        )
    return user


async def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if user.role != "admin":
        raise Forbidden("administrator rights are required", code="admin_required")
    return user


async def authenticate_admin(request: Request, runtime: Runtime, session: Session) -> User:
    """The check behind :data:`AdminUser` as a plain call, for a route whose authentication is conditional
    (``/metrics`` lets a plainly local scrape in without any). Same rules, desktop owner included."""
    user = await _authenticated(request, runtime, session)
    return await admin_user(await current_user(request, user, runtime))


async def audit_context(
    user: Annotated[User, Depends(user_pending_password)], client: ClientIP
) -> AuditContext:
    """Who is acting, for the audit log (``services/audit.py``): the signed-in user and the client address.
    It adds no check of its own: the route's ``CurrentUser`` / ``AdminUser`` decides who may call it."""
    return AuditContext.of(user, client)


AuditCtx = Annotated[AuditContext, Depends(audit_context)]

PendingUser = Annotated[User, Depends(user_pending_password)]
CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]


def ollama_target(
    runtime: RuntimeDep,
    session: SessionDep,
    provider: Annotated[
        uuid.UUID | None, Query(description="Ollama provider id (default: the default Ollama)")
    ] = None,
) -> OllamaTarget:
    """The Ollama host a request acts on (``?provider=``, or the default Ollama)."""
    target = ollama_admin.resolve_target(session, runtime.settings, provider)
    # End the read here: the route then waits on Ollama (a create with quantisation takes minutes), and in
    # a write request on SQLite this transaction would hold the write lock all that time.
    session.commit()
    return target


TargetDep = Annotated[OllamaTarget, Depends(ollama_target)]
