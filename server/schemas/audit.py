"""GET /api/audit: the audit log, newest first (services/audit.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditActor(BaseModel):
    """Who acted: ``id`` and ``email`` as they were then (``null`` for the system or an operator command,
    and the id for a sign-in with an unknown e-mail)."""

    id: uuid.UUID | None = None
    email: str | None = None


class AuditTargetRead(BaseModel):
    kind: str | None = None
    id: str | None = None
    name: str | None = None


class AuditEntryRead(BaseModel):
    id: uuid.UUID
    created_at: datetime
    actor: AuditActor
    #: One of the actions of ``services.audit.AuditAction``, such as ``user.created``.
    action: str
    target: AuditTargetRead
    #: success | failure | denied
    outcome: str
    #: The client address the request came from (``null`` for background work without one).
    client: str | None = None
    #: What changed, in JSON; never a secret.
    details: dict[str, Any] = {}


class AuditPage(BaseModel):
    items: list[AuditEntryRead]
    total: int
    limit: int
    offset: int


class AuditActionList(BaseModel):
    """Every action and outcome the log knows (for the filters)."""

    actions: list[str]
    outcomes: list[str]
