"""The audit log: who did what, when, from where. Append-only: no API edits or deletes an entry;
only retention (``MODELTRAIN_AUDIT_DAYS``) prunes.

Recording
---------
A service that changes something records its entry in the **caller's** session, before the route's
transaction commits, so the change and its entry commit or roll back together::

    audit.record(session, ctx, AuditAction.USER_CREATED,
                 target=AuditTarget("user", user.id, user.email), details={"role": user.role})

``ctx`` is an :class:`AuditContext`: the actor (id and e-mail as they are now) and the client address,
built by the route from the signed-in user (``server/deps.py``'s ``AuditCtx``). Events that change nothing
of their own (a refused sign-in, a throttled one, a refresh token replayed) are committed by their service
in a short transaction of their own; work that outlives its request (a model pull) uses
:func:`record_separately` with the context of the user who started it.

``details`` never holds a secret: keys that name one (password, api_key, token, secret...) are dropped by
:func:`record` whatever the caller passes.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Select, Table, delete, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from server.db.base import utcnow
from server.db.models import AuditEntry, User
from server.db.session import session_scope

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger(__name__)

#: Entries deleted per pruning transaction (indexed by ``created_at``).
PRUNE_BATCH = 5000
#: The most entries one CSV export holds.
CSV_MAX_ROWS = 100_000


class AuditAction(StrEnum):
    """Every event the audit log knows. The web UI translates these names (``audit.actions.*``)."""

    SIGN_IN = "auth.sign_in"
    SIGN_IN_THROTTLED = "auth.sign_in_throttled"
    REFRESH_REUSE = "auth.refresh_reuse"
    PASSWORD_CHANGED = "auth.password_changed"
    PASSWORD_RESET = "user.password_reset"
    USER_CREATED = "user.created"
    USER_CHANGED = "user.changed"
    USER_DISABLED = "user.disabled"
    USER_ENABLED = "user.enabled"
    USER_DELETED = "user.deleted"
    ROLE_CHANGED = "user.role_changed"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"
    LIMITS_CHANGED = "limits.changed"
    PROVIDER_CREATED = "provider.created"
    PROVIDER_CHANGED = "provider.changed"
    PROVIDER_DELETED = "provider.deleted"
    LAN_ENABLED = "lan.enabled"
    LAN_DISABLED = "lan.disabled"
    BACKUP_CREATED = "backup.created"
    BACKUP_RESTORED = "backup.restored"
    BACKUP_DELETED = "backup.deleted"
    OLLAMA_STARTED = "ollama.started"
    OLLAMA_STOPPED = "ollama.stopped"
    MODEL_PULLED = "model.pulled"
    MODEL_DELETED = "model.deleted"
    MODEL_CREATED = "model.created"
    SETTINGS_CHANGED = "settings.changed"
    ALERT_CHANNEL_CREATED = "alert_channel.created"
    ALERT_CHANNEL_CHANGED = "alert_channel.changed"
    ALERT_CHANNEL_DELETED = "alert_channel.deleted"


class AuditOutcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


@dataclass(frozen=True)
class AuditContext:
    """Who acts, and from where. ``actor_id`` None: the system or an operator command."""

    actor_id: uuid.UUID | None = None
    actor_email: str | None = None
    client: str | None = None

    @classmethod
    def of(cls, user: User | None, client: str | None = None) -> AuditContext:
        if user is None:
            return cls(client=client)
        return cls(actor_id=user.id, actor_email=user.email, client=client)


#: The context of work nobody signed in started (start-up, operator commands).
SYSTEM = AuditContext()


@dataclass(frozen=True)
class AuditTarget:
    kind: str
    id: uuid.UUID | str | None = None
    name: str | None = None


#: Words of detail keys that name a secret: such keys are never stored (``api_key``, ``refresh_token``,
#: ``new_password``...). Whole words, so ``tokens_per_minute`` (a limit) is kept.
_SECRET_WORDS = frozenset(
    {"password", "passwd", "secret", "token", "apikey", "authorization", "cookie", "credential"}
)
_SECRET_PAIRS = frozenset({("api", "key"), ("raw", "key"), ("private", "key")})
_WORD = re.compile(r"[a-z0-9]+")


def names_secret(key: str) -> bool:
    words = _WORD.findall(key.lower())
    return any(w in _SECRET_WORDS for w in words) or any(
        p in _SECRET_PAIRS for p in itertools.pairwise(words)
    )


def _clean(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON-safe copy of ``details`` without any key that names a secret."""
    if not details:
        return {}

    def value(v: Any) -> Any:
        if isinstance(v, Mapping):
            return _clean(v)
        if isinstance(v, (list, tuple)):
            return [value(x) for x in v]
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        return str(v)

    return {str(k): value(v) for k, v in details.items() if not names_secret(str(k))}


def _entry(
    ctx: AuditContext,
    action: AuditAction,
    target: AuditTarget | None,
    outcome: AuditOutcome,
    details: Mapping[str, Any] | None,
) -> AuditEntry:
    return AuditEntry(
        created_at=utcnow(),
        actor_id=ctx.actor_id,
        actor_email=(ctx.actor_email or None) and ctx.actor_email[:320],
        client_ip=(ctx.client or None) and ctx.client[:64],
        action=str(action),
        target_kind=target.kind if target else None,
        target_id=str(target.id)[:255] if target and target.id is not None else None,
        target_name=target.name[:255] if target and target.name else None,
        outcome=str(outcome),
        details=_clean(details),
    )


def record(
    session: Session,
    ctx: AuditContext,
    action: AuditAction,
    *,
    target: AuditTarget | None = None,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Add one entry to ``session`` (no commit: it commits or rolls back with the caller's change)."""
    entry = _entry(ctx, action, target, outcome, details)
    session.add(entry)
    return entry


def record_separately(
    factory: sessionmaker[Session],
    ctx: AuditContext,
    action: AuditAction,
    *,
    target: AuditTarget | None = None,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Record an event that has no transaction of its own (background work) in a short one. Never
    raises: a failed write is logged (the work it records is done either way)."""
    try:
        with session_scope(factory) as session:
            record(session, ctx, action, target=target, outcome=outcome, details=details)
    except Exception:
        log.warning("could not write the audit entry %s", action, exc_info=True)


# --- retention -------------------------------------------------------------------------------------------


def prune(runtime: Runtime, now: datetime | None = None) -> int:
    """Delete entries older than ``audit_days``, in indexed batches (each its own short transaction).
    Idempotent, so several instances need no lease. Returns how many were deleted."""
    cutoff = (now or utcnow()) - timedelta(days=runtime.settings.audit_days)
    table = cast(Table, AuditEntry.__table__)
    deleted = 0
    while True:
        with runtime.engine.begin() as conn:
            ids = select(table.c.id).where(table.c.created_at < cutoff).limit(PRUNE_BATCH).scalar_subquery()
            n = conn.execute(delete(table).where(table.c.id.in_(ids))).rowcount or 0
        deleted += n
        if n < PRUNE_BATCH:
            break
    if deleted:
        log.info("audit log pruned: %d entries older than %d days", deleted, runtime.settings.audit_days)
    return deleted


# --- queries ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditQuery:
    """The filters of ``GET /api/audit`` and its CSV export."""

    actor: str | None = None  # an actor id, or a substring of the e-mail
    actions: Sequence[str] = field(default_factory=tuple)
    target_kind: str | None = None
    target_id: str | None = None
    outcome: str | None = None
    time_from: datetime | None = None
    time_to: datetime | None = None


def _filtered(q: AuditQuery) -> Select[Any]:
    query = select(AuditEntry)
    if q.actor:
        actor = q.actor.strip()
        try:
            query = query.where(AuditEntry.actor_id == uuid.UUID(actor))
        except ValueError:
            escaped = actor.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(func.lower(AuditEntry.actor_email).like(f"%{escaped}%", escape="\\"))
    if q.actions:
        query = query.where(AuditEntry.action.in_(list(q.actions)))
    if q.target_kind:
        query = query.where(AuditEntry.target_kind == q.target_kind)
    if q.target_id:
        query = query.where(or_(AuditEntry.target_id == q.target_id, AuditEntry.target_name == q.target_id))
    if q.outcome:
        query = query.where(AuditEntry.outcome == q.outcome)
    if q.time_from is not None:
        query = query.where(AuditEntry.created_at >= q.time_from)
    if q.time_to is not None:
        query = query.where(AuditEntry.created_at <= q.time_to)
    return query


def list_entries(session: Session, q: AuditQuery, *, limit: int, offset: int) -> tuple[list[AuditEntry], int]:
    """Entries matching ``q``, newest first, and how many match in all."""
    query = _filtered(q)
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = session.scalars(
        query.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()).offset(offset).limit(limit)
    ).all()
    return list(rows), total


def to_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "created_at": entry.created_at,
        "actor": {"id": entry.actor_id, "email": entry.actor_email},
        "action": entry.action,
        "target": {"kind": entry.target_kind, "id": entry.target_id, "name": entry.target_name},
        "outcome": entry.outcome,
        "client": entry.client_ip,
        "details": entry.details or {},
    }


CSV_COLUMNS = (
    "created_at",
    "actor_id",
    "actor_email",
    "client",
    "action",
    "target_kind",
    "target_id",
    "target_name",
    "outcome",
    "details",
)


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(session: Session, q: AuditQuery) -> str:
    rows, _ = list_entries(session, q, limit=CSV_MAX_ROWS, offset=0)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for e in rows:
        writer.writerow(
            [
                e.created_at.isoformat(),
                _cell(e.actor_id),
                _cell(e.actor_email),
                _cell(e.client_ip),
                e.action,
                _cell(e.target_kind),
                _cell(e.target_id),
                _cell(e.target_name),
                e.outcome,
                _cell(json.dumps(e.details or {}, sort_keys=True, ensure_ascii=False)),
            ]
        )
    return out.getvalue()


__all__ = [
    "SYSTEM",
    "AuditAction",
    "AuditContext",
    "AuditOutcome",
    "AuditQuery",
    "AuditTarget",
    "list_entries",
    "prune",
    "record",
    "record_separately",
    "to_csv",
    "to_dict",
]
