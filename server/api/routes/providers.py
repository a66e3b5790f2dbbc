from __future__ import annotations

import uuid

from fastapi import APIRouter, Query, status
from fastapi.concurrency import run_in_threadpool

from server.api.openapi import raises
from server.api.paging import PageParam
from server.deps import AdminUser, AuditCtx, RuntimeDep, SessionDep
from server.errors import Conflict
from server.providers.registry import get_registry
from server.schemas.provider import (
    ProviderCreate,
    ProviderPage,
    ProviderRead,
    ProviderTestResult,
    ProviderUpdate,
)
from server.security.secret_store import get_secret_store
from server.services import providers as providers_service

router = APIRouter(prefix="/api/providers", tags=["providers"], responses=raises(Conflict))


@router.get("", response_model=ProviderPage, summary="List providers (admin)")
def list_providers(
    _: AdminUser, session: SessionDep, page: PageParam = 1, size: int = Query(50, ge=1, le=200)
) -> ProviderPage:
    rows, total = providers_service.list_providers(session, page, size)
    return ProviderPage(items=[ProviderRead.from_row(p) for p in rows], total=total, page=page, size=size)


@router.post(
    "", response_model=ProviderRead, status_code=status.HTTP_201_CREATED, summary="Add a provider (admin)"
)
def create_provider(
    body: ProviderCreate, _: AdminUser, session: SessionDep, runtime: RuntimeDep, ctx: AuditCtx
) -> ProviderRead:
    return ProviderRead.from_row(
        providers_service.create_provider(session, body, get_secret_store(runtime), ctx=ctx)
    )


@router.get("/{provider_id}", response_model=ProviderRead, summary="One provider (admin)")
def get_provider(provider_id: uuid.UUID, _: AdminUser, session: SessionDep) -> ProviderRead:
    return ProviderRead.from_row(providers_service.get_provider(session, provider_id))


@router.patch("/{provider_id}", response_model=ProviderRead, summary="Change a provider (admin)")
def update_provider(
    provider_id: uuid.UUID,
    body: ProviderUpdate,
    _: AdminUser,
    session: SessionDep,
    runtime: RuntimeDep,
    ctx: AuditCtx,
) -> ProviderRead:
    secrets = get_secret_store(runtime)
    return ProviderRead.from_row(
        providers_service.update_provider(session, provider_id, body, secrets, ctx=ctx)
    )


@router.delete("/{provider_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a provider (admin)")
def delete_provider(
    provider_id: uuid.UUID, _: AdminUser, session: SessionDep, runtime: RuntimeDep, ctx: AuditCtx
) -> None:
    providers_service.delete_provider(session, provider_id, get_secret_store(runtime), ctx=ctx)


@router.post("/{provider_id}/test", response_model=ProviderTestResult, summary="Test the connection (admin)")
async def test_provider(
    provider_id: uuid.UUID, _: AdminUser, session: SessionDep, runtime: RuntimeDep
) -> ProviderTestResult:
    # Async because it waits on the network; the DB/secret store/DNS part runs in a worker thread.
    provider, key, error = await run_in_threadpool(
        providers_service.load_for_test, session, provider_id, get_secret_store(runtime)
    )
    await run_in_threadpool(session.commit)  # no transaction (on SQLite, the write lock) across the network
    if error is not None:
        return ProviderTestResult(ok=False, models=[], error=error)
    return await providers_service.check_connection(get_registry(runtime), provider, key)
