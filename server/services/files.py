"""Uploaded files: stored under ``<data dir>/files/`` by id (never by the client's name), owned by the
uploader and never shown to anyone else (404 ``file_not_found``), content sniffed, documents' text
extracted once and cached next to the bytes (``<key>.txt``, page spans in ``<key>.pages.json``).

A file lives until its owner deletes it, or until the conversation that used it is deleted and nothing
else (another message, a knowledge collection) refers to it."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from anyio import to_thread
from sqlalchemy import delete, event, select
from sqlalchemy.orm import Session

from server.db.models import File, KnowledgeDocument, Message, MessageFile, User
from server.errors import Conflict, InsufficientStorage, InvalidInput, NotFound, PayloadTooLarge
from server.runtime import Runtime
from server.services import documents
from server.settings import Settings

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
FILES_DIR = "files"
THUMBNAIL_PX = 256
MIB = 1024 * 1024


class Upload(Protocol):
    """What the route hands over (FastAPI's ``UploadFile`` fits)."""

    @property
    def file(self) -> IO[bytes]: ...
    @property
    def filename(self) -> str | None: ...
    @property
    def content_type(self) -> str | None: ...


def files_dir(settings: Settings) -> Path:
    return settings.data_dir / FILES_DIR


def upload_body_limit(settings: Settings) -> int:
    """The request body the network guard lets through to POST /api/files: the cap plus the multipart
    envelope (a file just over the cap is refused by :func:`store_upload` as ``file_too_large``)."""
    return settings.max_upload_mb * MIB + 64 * 1024


def _too_large(settings: Settings) -> PayloadTooLarge:
    return PayloadTooLarge(f"the file is larger than {settings.max_upload_mb} MiB", code="file_too_large")


def path_of(runtime: Runtime, file: File) -> Path:
    return runtime.settings.data_dir / file.storage_key


def _clean_name(name: str | None) -> str:
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    return (base or "file")[:255]


def _copy(settings: Settings, source: IO[bytes], dest: Path) -> tuple[int, str]:
    """Stream ``source`` to ``dest`` (created 0600) under the cap; returns (size, sha256)."""
    limit = settings.max_upload_mb * MIB
    digest = hashlib.sha256()
    written = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                written += len(chunk)
                if written > limit:
                    raise _too_large(settings)
                digest.update(chunk)
                out.write(chunk)
    except BaseException as exc:
        dest.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage(
                "the disk holding the data directory is full", code="disk_full"
            ) from None
        raise
    if written == 0:
        dest.unlink(missing_ok=True)
        raise InvalidInput("the file is empty", code="file_empty")
    return written, digest.hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    """Write a derived file (extracted text, page spans, thumbnail) 0600, like the upload itself."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_text_cache(dest: Path, extracted: documents.Extracted) -> None:
    _write_private(_text_path(dest), extracted.text.encode("utf-8"))
    spans = [[p.page, p.start, p.end] for p in extracted.pages]
    _write_private(_pages_path(dest), json.dumps(spans).encode("utf-8"))


def _text_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".txt")


def _pages_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".pages.json")


def _thumb_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".thumb.png")


def _remove_bytes(dest: Path) -> None:
    for path in (dest, _text_path(dest), _pages_path(dest), _thumb_path(dest)):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _ingest(settings: Settings, upload: Upload, file_id: uuid.UUID) -> File:
    """Copy, sniff and (for a document) extract; every refusal removes what was written."""
    key = f"{FILES_DIR}/{file_id.hex[:2]}/{file_id}"
    dest = settings.data_dir / key
    name = _clean_name(upload.filename)
    size, sha256 = _copy(settings, upload.file, dest)
    try:
        sniffed = documents.sniff(dest, name, upload.content_type)
        text_chars = tokens = None
        if sniffed.kind == "document":
            extracted = documents.extract(dest, sniffed.mime)
            _write_text_cache(dest, extracted)
            text_chars, tokens = len(extracted.text), documents.estimate_tokens(extracted.text)
    except BaseException:
        _remove_bytes(dest)
        raise
    return File(
        id=file_id,
        name=name,
        mime=sniffed.mime,
        size=size,
        sha256=sha256,
        kind=sniffed.kind,
        storage_key=key,
        text_chars=text_chars,
        tokens=tokens,
    )


def _insert(runtime: Runtime, session: Session, user: User, row: File) -> File:
    row.owner_id = user.id
    try:
        session.add(row)
        session.commit()
    except BaseException:
        session.rollback()
        _remove_bytes(path_of(runtime, row))
        raise
    session.refresh(row)
    return row


async def store_upload(runtime: Runtime, session: Session, user: User, upload: Upload) -> File:
    """Stream ``upload`` to the data dir under ``max_upload_mb``, sniff its content, extract a document's
    text, and record it as ``user``'s. 413 ``file_too_large``, 415 for an unsupported type or bytes that
    are not what the name claims, 422 for a damaged file or a zip bomb."""
    session.commit()  # release the request's read transaction (SQLite's write lock) during the copy
    row = await to_thread.run_sync(_ingest, runtime.settings, upload, uuid.uuid4())
    stored = await to_thread.run_sync(_insert, runtime, session, user, row)
    log.info("file stored: %s (%s, %d bytes)", stored.id, stored.mime, stored.size)
    return stored


def get_owned(session: Session, user: User, file_id: uuid.UUID) -> File:
    """``user``'s file ``file_id``; 404 ``file_not_found`` for anyone else's and for unknown ids."""
    row = session.get(File, file_id)
    if row is None or row.owner_id != user.id:
        raise NotFound("file not found", code="file_not_found")
    return row


def get_many_owned(session: Session, user: User, file_ids: Sequence[uuid.UUID]) -> list[File]:
    """``user``'s files in the order given (duplicates dropped); 404 if any is not theirs."""
    unique = list(dict.fromkeys(file_ids))
    return [get_owned(session, user, fid) for fid in unique]


def list_files(session: Session, user: User, limit: int = 100) -> list[File]:
    statement = (
        select(File).where(File.owner_id == user.id).order_by(File.created_at.desc(), File.id).limit(limit)
    )
    return list(session.scalars(statement))


def read_text(runtime: Runtime, file: File) -> str:
    """A document's extracted text (from the cache next to it; extracted again if the cache is gone)."""
    if file.kind != "document":
        raise InvalidInput("an image has no text", code="not_a_document")
    dest = path_of(runtime, file)
    try:
        return _text_path(dest).read_text(encoding="utf-8")
    except FileNotFoundError:
        extracted = documents.extract(dest, file.mime)
        _write_text_cache(dest, extracted)
        return extracted.text


def read_pages(runtime: Runtime, file: File) -> list[documents.PageSpan]:
    """A document's page spans (PDF only; empty for the others)."""
    path = _pages_path(path_of(runtime, file))
    if not path.exists():
        read_text(runtime, file)
    try:
        return [documents.PageSpan(*span) for span in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError):
        return []


def image_data_url(runtime: Runtime, file: File) -> str:
    """An image as a ``data:`` URL (what the providers send to a vision model)."""
    data = path_of(runtime, file).read_bytes()
    return f"data:{file.mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail(runtime: Runtime, file: File) -> Path:
    """A small PNG of an image (made once, kept next to it)."""
    return thumbnail_at(runtime.settings, file)


def thumbnail_at(settings: Settings, file: File) -> Path:
    if file.kind != "image":
        raise InvalidInput("only images have thumbnails", code="not_an_image")
    from PIL import Image

    dest = settings.data_dir / file.storage_key
    thumb = _thumb_path(dest)
    if not thumb.exists():
        with Image.open(dest) as img:
            img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            small = img.convert("RGBA")
            buffer = io.BytesIO()
            small.save(buffer, format="PNG")
        tmp = thumb.with_name(thumb.name + f".{uuid.uuid4().hex[:8]}")
        _write_private(tmp, buffer.getvalue())
        os.replace(tmp, thumb)
    return thumb


# --- deletion -------------------------------------------------------------------------------------------


def _collection_refs(session: Session, file_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """The files among ``file_ids`` a knowledge collection holds."""
    ids = list(file_ids)
    if not ids:
        return set()
    held = select(KnowledgeDocument.file_id).where(
        KnowledgeDocument.file_id.in_(ids), KnowledgeDocument.collection_id.is_not(None)
    )
    return set(session.scalars(held))


def _remove_after_commit(session: Session, paths: list[Path]) -> None:
    """Unlink the bytes once the rows' deletion is committed (a rollback keeps them)."""
    if not paths:
        return

    def remove(_session: Session) -> None:
        for path in paths:
            _remove_bytes(path)

    event.listen(session, "after_commit", remove, once=True)


def delete_file(runtime: Runtime, session: Session, user: User, file_id: uuid.UUID) -> None:
    """Delete ``user``'s file: it disappears from the messages that attached it (their text stays).
    409 ``file_in_use`` while a knowledge collection holds it (remove it there first)."""
    row = get_owned(session, user, file_id)
    if _collection_refs(session, [row.id]):
        raise Conflict("a knowledge collection uses this file; remove it there first", code="file_in_use")
    path = path_of(runtime, row)
    session.execute(delete(MessageFile).where(MessageFile.file_id == row.id))
    session.delete(row)
    session.flush()
    _remove_after_commit(session, [path])


def delete_unused(settings: Settings, session: Session, file_ids: Iterable[uuid.UUID]) -> int:
    """Delete the files among ``file_ids`` that no message and no collection refers to any more (call
    after deleting the messages, in the same transaction). Returns how many were deleted."""
    ids = list(dict.fromkeys(file_ids))
    if not ids:
        return 0
    used = set(
        session.scalars(
            select(MessageFile.file_id).where(MessageFile.file_id.in_(ids)).group_by(MessageFile.file_id)
        )
    )
    used |= _collection_refs(session, ids)
    doomed = [row for row in session.scalars(select(File).where(File.id.in_(ids))) if row.id not in used]
    paths = [settings.data_dir / row.storage_key for row in doomed]
    for row in doomed:
        session.delete(row)
    session.flush()
    _remove_after_commit(session, paths)
    return len(doomed)


def remove_with_owner(settings: Settings, session: Session, owner_id: uuid.UUID) -> int:
    """Before an account is deleted: its files' rows go with it (the foreign key cascades) and their bytes
    are unlinked once that deletion commits. Returns how many files."""
    keys = session.scalars(select(File.storage_key).where(File.owner_id == owner_id)).all()
    _remove_after_commit(session, [settings.data_dir / key for key in keys])
    return len(keys)


def conversation_file_ids(session: Session, conversation_id: uuid.UUID) -> list[uuid.UUID]:
    """The files attached to the messages of a conversation."""
    statement = (
        select(MessageFile.file_id)
        .join(Message, Message.id == MessageFile.message_id)
        .where(Message.conversation_id == conversation_id)
    )
    return list(dict.fromkeys(session.scalars(statement)))


def attachments_of(session: Session, message_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """The read model's ``attachments`` of each message (``AttachmentRead`` dicts), in order."""
    if not message_ids:
        return {}
    rows = session.execute(
        select(MessageFile.message_id, MessageFile.mode, File)
        .join(File, File.id == MessageFile.file_id)
        .where(MessageFile.message_id.in_(message_ids))
        .order_by(MessageFile.message_id, MessageFile.position)
    ).all()
    out: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for message_id, mode, f in rows:
        out.setdefault(message_id, []).append(
            {
                "id": str(f.id),
                "name": f.name,
                "mime": f.mime,
                "size": f.size,
                "kind": f.kind,
                "mode": mode,
                "tokens": f.tokens,
            }
        )
    return out
