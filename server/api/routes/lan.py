from __future__ import annotations

from fastapi import APIRouter, Response

from server.api.openapi import raises
from server.deps import AdminUser, AuditCtx, RuntimeDep, SessionDep
from server.errors import Conflict, NotFound
from server.schemas.lan import LanRead, LanUpdate
from server.services import lan as lan_service

#: 409: no LAN switch on this host (a headless server); 404 (the certificate): LAN access never turned on.
router = APIRouter(prefix="/api/lan", tags=["lan"], responses=raises(Conflict, NotFound))


@router.get("", response_model=LanRead, summary="LAN access state and URL (admin)")
def get_lan(_: AdminUser, runtime: RuntimeDep) -> LanRead:
    return lan_service.get_status(runtime)


@router.put("", response_model=LanRead, summary="Turn LAN access on (password again) or off (admin)")
def put_lan(
    body: LanUpdate, admin: AdminUser, session: SessionDep, runtime: RuntimeDep, ctx: AuditCtx
) -> LanRead:
    return lan_service.update(session, runtime, admin, body, ctx=ctx)


@router.get(
    "/ca.crt",
    response_class=Response,
    responses={200: {"content": {"application/x-x509-ca-cert": {}}}, 404: {}},
    summary="The LAN certificate authority's certificate (DER), to install on devices (public)",
)
def get_ca_certificate(runtime: RuntimeDep) -> Response:
    return Response(
        lan_service.ca_certificate(runtime),
        media_type="application/x-x509-ca-cert",
        headers={
            "Content-Disposition": 'attachment; filename="modeltrain-ca.crt"',
            "Cache-Control": "no-store",
        },
    )
