from __future__ import annotations

from fastapi import APIRouter

from server.deps import AdminUser, RuntimeDep
from server.schemas.alert import AlertFeed
from server.services.alerts import deployment_feed

router = APIRouter(prefix="/api/alerts", tags=["alerts"])


@router.get(
    "",
    response_model=AlertFeed,
    summary="Active alerts of every instance and this instance's recent ones (admin; the tray reads it)",
)
def get_alerts(_: AdminUser, runtime: RuntimeDep) -> AlertFeed:
    return deployment_feed(runtime)
