"""``/api/hosts``: every provider's host with its health, load and loaded models (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from server.deps import AdminUser, RuntimeDep, SessionDep
from server.schemas.host import HostList
from server.services import routing as routing_service

router = APIRouter(prefix="/api/hosts", tags=["hosts"])


@router.get("", response_model=HostList, summary="Hosts with their state (admin)")
async def list_hosts(_: AdminUser, session: SessionDep, runtime: RuntimeDep) -> HostList:
    return await routing_service.hosts_view(session, runtime)


@router.post("/probe", response_model=HostList, summary="Probe every host now (admin)")
async def probe_hosts(_: AdminUser, session: SessionDep, runtime: RuntimeDep) -> HostList:
    return await routing_service.hosts_view(session, runtime, probe_now=True)
