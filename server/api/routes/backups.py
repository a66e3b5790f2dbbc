from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile, status
from fastapi.responses import FileResponse

from server.api.openapi import raises
from server.deps import AdminUser, AuditCtx, RuntimeDep, SessionDep
from server.errors import Conflict, InsufficientStorage, NotFound
from server.schemas.backup import BackupCreate, BackupPage, BackupRead, BackupUpdate, RestoreRead
from server.services import backups as backups_service
from server.services.backups import audited as audited_backups

router = APIRouter(
    prefix="/api/backups", tags=["backups"], responses=raises(NotFound, Conflict, InsufficientStorage)
)


@router.get("", response_model=BackupPage, summary="List backups, newest first (admin)")
def list_backups(_: AdminUser, runtime: RuntimeDep) -> BackupPage:
    items = backups_service.store_for(runtime.settings).list()
    return BackupPage(items=list(items), total=len(items))


@router.post(
    "", response_model=BackupRead, status_code=status.HTTP_201_CREATED, summary="Back up now (admin)"
)
def create_backup(
    _: AdminUser, runtime: RuntimeDep, session: SessionDep, ctx: AuditCtx, body: BackupCreate | None = None
) -> BackupRead:
    backups_service.release_request_session(session)
    return audited_backups.create(runtime, ctx, keep=bool(body and body.keep))


@router.get("/{backup_id}/download", summary="Download a backup archive (admin)", response_class=FileResponse)
def download_backup(backup_id: str, _: AdminUser, runtime: RuntimeDep) -> FileResponse:
    info = backups_service.store_for(runtime.settings).get(backup_id)
    return FileResponse(
        info.path, media_type="application/gzip", filename=f"modeltrain-backup-{info.id}.tar.gz"
    )


@router.patch("/{backup_id}", response_model=BackupRead, summary="Mark a backup keep (exempt from retention)")
def update_backup(backup_id: str, body: BackupUpdate, _: AdminUser, runtime: RuntimeDep) -> BackupRead:
    return backups_service.store_for(runtime.settings).set_keep(backup_id, body.keep)


@router.delete("/{backup_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a backup (admin)")
def delete_backup(backup_id: str, _: AdminUser, runtime: RuntimeDep, ctx: AuditCtx) -> None:
    audited_backups.delete(runtime, ctx, backup_id)


@router.post("/{backup_id}/restore", response_model=RestoreRead, summary="Restore a backup (admin)")
def restore_backup(
    backup_id: str, _: AdminUser, runtime: RuntimeDep, session: SessionDep, ctx: AuditCtx
) -> RestoreRead:
    backups_service.release_request_session(session)
    return audited_backups.restore(runtime, ctx, backup_id)


@router.post(
    "/upload-restore", response_model=RestoreRead, summary="Upload a backup file and restore it (admin)"
)
def upload_restore(
    _: AdminUser,
    runtime: RuntimeDep,
    session: SessionDep,
    ctx: AuditCtx,
    file: Annotated[UploadFile, File()],
) -> RestoreRead:
    backups_service.release_request_session(session)
    return audited_backups.restore_uploaded(runtime, ctx, file.file)
