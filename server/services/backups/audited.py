"""The backup operations of the API, each with its audit entry (``services/audit.py``).

A backup, a restore and a deletion work on files and whole databases, not in the request's transaction
(the route ends that first), so each entry is written in a short transaction of its own once the work
has succeeded. A restore's entry goes into the restored database: the one that is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, TypeVar

from server.runtime import Runtime
from server.schemas.backup import BackupRecord, RestoreRead
from server.services import audit
from server.services.alerts import get_alert_center
from server.services.audit import AuditAction, AuditContext, AuditTarget
from server.services.backups.create import create_backup
from server.services.backups.restore import restore_backup, restore_upload
from server.services.backups.store import store_for

T = TypeVar("T")


def _audited(
    runtime: Runtime,
    ctx: AuditContext,
    action: AuditAction,
    target: AuditTarget,
    work: Callable[[], T],
    details: Callable[[T], dict[str, object]],
) -> T:
    """Run ``work`` and record it once it has succeeded. A failure writes nothing: a refused restore or a
    backup that hit a full disk must leave the live database exactly as it was."""
    result = work()
    audit.record_separately(runtime.session_factory, ctx, action, target=target, details=details(result))
    return result


def create(runtime: Runtime, ctx: AuditContext, *, keep: bool) -> BackupRecord:
    def details(made: BackupRecord) -> dict[str, object]:
        return {"id": made.id, "size": made.size, "verified": made.verified, "keep": made.keep}

    return _audited(
        runtime,
        ctx,
        AuditAction.BACKUP_CREATED,
        AuditTarget("backup"),
        lambda: create_backup(runtime.settings, keep=keep, alerts=get_alert_center(runtime)),
        details,
    )


def delete(runtime: Runtime, ctx: AuditContext, backup_id: str) -> None:
    _audited(
        runtime,
        ctx,
        AuditAction.BACKUP_DELETED,
        AuditTarget("backup", backup_id, backup_id),
        lambda: store_for(runtime.settings).delete(backup_id),
        lambda _: {},
    )


def _restore_details(done: RestoreRead) -> dict[str, object]:
    return {
        "schema_revision_before": done.schema_revision_before,
        "schema_revision": done.schema_revision,
        "previous_backup_id": done.previous_backup_id,
        "sessions_revoked": done.sessions_revoked,
    }


def restore(runtime: Runtime, ctx: AuditContext, backup_id: str) -> RestoreRead:
    return _audited(
        runtime,
        ctx,
        AuditAction.BACKUP_RESTORED,
        AuditTarget("backup", backup_id, backup_id),
        lambda: restore_backup(
            runtime.settings, backup_id, engine=runtime.engine, alerts=get_alert_center(runtime)
        ),
        _restore_details,
    )


def restore_uploaded(runtime: Runtime, ctx: AuditContext, stream: IO[bytes]) -> RestoreRead:
    return _audited(
        runtime,
        ctx,
        AuditAction.BACKUP_RESTORED,
        AuditTarget("backup", None, "uploaded file"),
        lambda: restore_upload(
            runtime.settings, stream, engine=runtime.engine, alerts=get_alert_center(runtime)
        ),
        _restore_details,
    )
