"""Files of the signed-in user: upload (multipart, field ``file``), list, download, delete.

The network guard lets ``MODELTRAIN_MAX_UPLOAD_MB`` (plus the multipart envelope) through on
``POST /api/files`` alone (server/app.py); the service enforces the cap itself while the bytes stream to
disk (413 ``file_too_large``). Another user's file is 404, as an unknown one."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile, status
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from server.api.openapi import raises
from server.deps import CurrentUser, RuntimeDep, SessionDep
from server.errors import Conflict, InsufficientStorage, NotFound, PayloadTooLarge
from server.schemas.file import FileList, FileRead
from server.services import documents
from server.services import files as files_service

router = APIRouter(
    prefix="/api/files",
    tags=["files"],
    responses=raises(NotFound, PayloadTooLarge, documents.UnsupportedFile, InsufficientStorage),
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def _disposition(kind: str, name: str) -> str:
    safe = _UNSAFE.sub("-", name).strip("-. ") or "file"
    return f'{"inline" if kind == "image" else "attachment"}; filename="{safe[:120]}"'


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=FileRead,
    summary="Upload a file (an image for a vision model, or a document)",
)
async def upload_file(
    file: Annotated[UploadFile, File()], user: CurrentUser, runtime: RuntimeDep, session: SessionDep
) -> FileRead:
    row = await files_service.store_upload(runtime, session, user, file)
    return FileRead.model_validate(row)


@router.get("", response_model=FileList, summary="Your files, newest first")
def list_files(user: CurrentUser, session: SessionDep, limit: int = Query(100, ge=1, le=500)) -> FileList:
    return FileList(
        items=[FileRead.model_validate(f) for f in files_service.list_files(session, user, limit)]
    )


@router.get("/{file_id}/meta", response_model=FileRead, summary="One of your files (its description)")
def file_meta(file_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> FileRead:
    return FileRead.model_validate(files_service.get_owned(session, user, file_id))


@router.get(
    "/{file_id}",
    response_class=FileResponse,
    summary="The file's bytes (an image inline; ?thumbnail=1: a small PNG of it)",
    responses={
        200: {
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The file, with its sniffed type (a thumbnail: image/png)",
        }
    },
)
async def download_file(
    file_id: uuid.UUID,
    user: CurrentUser,
    runtime: RuntimeDep,
    session: SessionDep,
    thumbnail: bool = Query(False),
) -> FileResponse:
    row = await run_in_threadpool(files_service.get_owned, session, user, file_id)
    # The network guard adds ``X-Content-Type-Options: nosniff`` and the app's CSP; this CSP (enforced
    # together with it) sandboxes a document opened directly (an HTML file runs no script).
    headers = {
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, max-age=3600",
    }
    if thumbnail:
        path = await run_in_threadpool(files_service.thumbnail, runtime, row)
        return FileResponse(path, media_type="image/png", headers=headers)
    headers["Content-Disposition"] = _disposition(row.kind, row.name)
    return FileResponse(files_service.path_of(runtime, row), media_type=row.mime, headers=headers)


@router.delete(
    "/{file_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a file (it disappears from the messages that attached it)",
    responses=raises(Conflict),
)
def delete_file(file_id: uuid.UUID, user: CurrentUser, runtime: RuntimeDep, session: SessionDep) -> None:
    files_service.delete_file(runtime, session, user, file_id)
