from __future__ import annotations

from fastapi import APIRouter

from server.deps import AdminUser, RuntimeDep, SessionDep
from server.schemas.lan import LanRead, LanUpdate
from server.services import lan as lan_service

router = APIRouter(prefix="/api/lan", tags=["lan"])


@router.get("", response_model=LanRead, summary="LAN access state and URL (admin)")
def get_lan(_: AdminUser, runtime: RuntimeDep) -> LanRead:
    return lan_service.get_status(runtime)


@router.put("", response_model=LanRead, summary="Turn LAN access on (password again) or off (admin)")
def put_lan(body: LanUpdate, admin: AdminUser, session: SessionDep, runtime: RuntimeDep) -> LanRead:
    return lan_service.update(session, runtime, admin, body)
