from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from server.api.paging import PageParam
from server.deps import AdminUser, RuntimeDep, SessionDep
from server.schemas.alert import AlertEventPage, AlertFeed
from server.schemas.common import IsoDateTime
from server.services import alert_history
from server.services.alerts import deployment_feed

router = APIRouter(prefix="/api/alerts", tags=["alerts"])


@router.get(
    "",
    response_model=AlertFeed,
    summary="Active alerts of every instance and this instance's recent ones (admin; the tray reads it)",
)
def get_alerts(_: AdminUser, runtime: RuntimeDep) -> AlertFeed:
    return deployment_feed(runtime)


@router.get(
    "/history",
    response_model=AlertEventPage,
    summary="The stored alert history of every instance, newest first (admin)",
)
def get_alert_history(
    _: AdminUser,
    session: SessionDep,
    level: Annotated[Literal["warning", "alert"] | None, Query(description="Only this level.")] = None,
    state: Annotated[
        Literal["raised", "changed", "resolved"] | None, Query(description="Only this change.")
    ] = None,
    key: Annotated[str | None, Query(max_length=200, description="Alert keys containing this.")] = None,
    instance: Annotated[str | None, Query(max_length=255, description="Only this instance.")] = None,
    time_from: Annotated[
        IsoDateTime | None, Query(alias="from", description="At or after (ISO 8601).")
    ] = None,
    time_to: Annotated[IsoDateTime | None, Query(alias="to", description="Before (ISO 8601).")] = None,
    page: PageParam = 1,
    size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> AlertEventPage:
    return alert_history.list_events(
        session,
        level=level,
        state=state,
        key=key or None,
        instance=instance or None,
        since=time_from,
        until=time_to,
        page=page,
        size=size,
    )
