"""Usage accounting: GET /api/usage (JSON) and GET /api/usage.csv (the same rows as CSV)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from server.deps import CurrentUser, SessionDep
from server.schemas.common import IsoDate
from server.schemas.usage import UsageRead
from server.services import usage as usage_service

router = APIRouter(prefix="/api", tags=["usage"])


def _query(
    granularity: Annotated[Literal["raw", "day"], Query(description="Raw records or daily rollups.")] = "day",
    day_from: Annotated[
        IsoDate | None,
        Query(alias="from", description="First UTC day (YYYY-MM-DD); default 29 days before 'to'"),
    ] = None,
    day_to: Annotated[
        IsoDate | None, Query(alias="to", description="Last UTC day, included; default today")
    ] = None,
    user_id: Annotated[uuid.UUID | None, Query(description="Only this user's usage (admins).")] = None,
    key_id: Annotated[uuid.UUID | None, Query(description="Only requests made with this API key.")] = None,
    model: Annotated[str | None, Query(max_length=255, description="Only this model id.")] = None,
) -> usage_service.UsageQuery:
    return usage_service.UsageQuery(
        granularity=granularity, day_from=day_from, day_to=day_to, user_id=user_id, key_id=key_id, model=model
    )


QueryDep = Annotated[usage_service.UsageQuery, Depends(_query)]


@router.get("/usage", response_model=UsageRead, summary="Usage records or daily rollups (own; admins: all)")
def get_usage(user: CurrentUser, session: SessionDep, q: QueryDep) -> UsageRead:
    return UsageRead.model_validate(usage_service.get_usage(session, user, q))


@router.get(
    "/usage.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "The same rows as GET /api/usage."}},
    summary="Usage as CSV",
)
def get_usage_csv(user: CurrentUser, session: SessionDep, q: QueryDep) -> Response:
    items = usage_service.list_usage(session, user, q)
    filename = f"modeltrain-usage-{q.granularity}.csv"
    return Response(
        usage_service.to_csv(items, q.granularity),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
