from __future__ import annotations

from fastapi import APIRouter

from server.deps import AdminUser, RuntimeDep
from server.schemas.alert import AlertFeed
from server.services.alerts import get_alert_center

router = APIRouter(prefix="/api/alerts", tags=["alerts"])


@router.get("", response_model=AlertFeed, summary="Active and recent alerts (admin; the tray reads it)")
def get_alerts(_: AdminUser, runtime: RuntimeDep) -> AlertFeed:
    return get_alert_center(runtime).snapshot()
