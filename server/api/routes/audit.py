"""The audit log (admin): GET /api/audit (JSON, paged) and GET /api/audit.csv (the same filters). No route
edits or deletes an entry; only retention prunes (``MODELTRAIN_AUDIT_DAYS``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from server.api.paging import OffsetParam
from server.deps import AdminUser, SessionDep
from server.schemas.audit import AuditActionList, AuditEntryRead, AuditPage
from server.schemas.common import IsoDateTime
from server.services import audit as audit_service

router = APIRouter(prefix="/api", tags=["audit"])


def _query(
    actor: Annotated[
        str | None, Query(max_length=320, description="An actor's user id, or part of their e-mail.")
    ] = None,
    action: Annotated[
        list[audit_service.AuditAction] | None,
        Query(description="Only these actions (repeat the parameter)."),
    ] = None,
    target_kind: Annotated[
        str | None, Query(max_length=32, description="Only targets of this kind (user, provider, model...).")
    ] = None,
    target_id: Annotated[
        str | None, Query(max_length=255, description="Only this target (its id or its name).")
    ] = None,
    outcome: Annotated[audit_service.AuditOutcome | None, Query(description="Only this outcome.")] = None,
    time_from: Annotated[
        IsoDateTime | None, Query(alias="from", description="Entries at or after this time (ISO 8601).")
    ] = None,
    time_to: Annotated[
        IsoDateTime | None, Query(alias="to", description="Entries at or before this time (ISO 8601).")
    ] = None,
) -> audit_service.AuditQuery:
    return audit_service.AuditQuery(
        actor=actor or None,
        actions=tuple(str(a) for a in action or ()),
        target_kind=target_kind or None,
        target_id=target_id or None,
        outcome=str(outcome) if outcome else None,
        time_from=time_from,
        time_to=time_to,
    )


QueryDep = Annotated[audit_service.AuditQuery, Depends(_query)]


@router.get("/audit", response_model=AuditPage, summary="The audit log, newest first (admin)")
def get_audit(
    _: AdminUser,
    session: SessionDep,
    q: QueryDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: OffsetParam = 0,
) -> AuditPage:
    rows, total = audit_service.list_entries(session, q, limit=limit, offset=offset)
    items = [AuditEntryRead.model_validate(audit_service.to_dict(e)) for e in rows]
    return AuditPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/audit/actions",
    response_model=AuditActionList,
    summary="The actions and outcomes of the audit log (admin)",
)
def get_audit_actions(_: AdminUser) -> AuditActionList:
    return AuditActionList(
        actions=[str(a) for a in audit_service.AuditAction],
        outcomes=[str(o) for o in audit_service.AuditOutcome],
    )


@router.get(
    "/audit.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "The entries of GET /api/audit, as CSV."}},
    summary="The audit log as CSV (admin)",
)
def get_audit_csv(_: AdminUser, session: SessionDep, q: QueryDep) -> Response:
    return Response(
        audit_service.to_csv(session, q),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="modeltrain-audit.csv"'},
    )
