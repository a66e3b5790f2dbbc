"""Knowledge collections: who may read or change one, CRUD, their documents, re-index and cancel.

A collection is visible to its owner, to every user when ``shared`` (which only an admin sets), and to
admins; only its owner or an admin changes it. Anyone else gets 404 ``collection_not_found`` (its
existence is not disclosed); a reader of a shared collection who tries to change it gets 403
``collection_read_only``."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from server.db.base import utcnow
from server.db.models import File, KnowledgeChunk, KnowledgeCollection, KnowledgeDocument, User
from server.errors import Forbidden, InvalidInput, NotFound
from server.runtime import Runtime
from server.services import models as models_service


def _not_found() -> NotFound:
    return NotFound("knowledge collection not found", code="collection_not_found")


def _is_admin(user: User) -> bool:
    return user.role == "admin"


def readable(session: Session, user: User, collection_id: uuid.UUID) -> KnowledgeCollection:
    collection = session.get(KnowledgeCollection, collection_id)
    if collection is None or not (collection.owner_id == user.id or collection.shared or _is_admin(user)):
        raise _not_found()
    return collection


def writable(session: Session, user: User, collection_id: uuid.UUID) -> KnowledgeCollection:
    collection = readable(session, user, collection_id)
    if collection.owner_id != user.id and not _is_admin(user):
        raise Forbidden("this knowledge collection is shared read-only", code="collection_read_only")
    return collection


def _check_model(session: Session, runtime: Runtime, user: User, model_id: str) -> None:
    """The embedding model must resolve for this user (404 ``model_not_found`` otherwise)."""
    resolved = models_service.resolve_model(session, runtime, model_id, user_id=user.id)
    if getattr(resolved.adapter, "embed", None) is None:
        raise InvalidInput("this model's provider cannot compute embeddings", code="model_not_embedding")


def _summary(session: Session, user: User, collection: KnowledgeCollection) -> dict[str, Any]:
    rows = session.execute(
        select(
            KnowledgeDocument.status,
            func.count(),
            func.coalesce(func.sum(KnowledgeDocument.chunk_count), 0),
            func.coalesce(func.sum(KnowledgeDocument.progress), 0.0),
        )
        .where(KnowledgeDocument.collection_id == collection.id)
        .group_by(KnowledgeDocument.status)
    ).all()
    counts = {status: int(n) for status, n, _, _ in rows}
    chunks = sum(int(c) for status, _, c, _ in rows if status == "ready")
    pending = counts.get("queued", 0) + counts.get("indexing", 0)
    pending_progress = sum(float(p) for status, _, _, p in rows if status in ("queued", "indexing"))
    total = sum(counts.values())
    if total == 0:
        status = "empty"
    elif pending:
        status = "indexing"
    elif counts.get("error"):
        status = "error"
    else:
        status = "ready"
    return {
        "id": collection.id,
        "name": collection.name,
        "description": collection.description,
        "embedding_model": collection.embedding_model,
        "shared": collection.shared,
        "owner_id": collection.owner_id,
        "writable": collection.owner_id == user.id or _is_admin(user),
        "status": status,
        "document_count": total,
        "chunk_count": chunks,
        "progress": round(pending_progress / pending, 4) if pending else 1.0,
        "created_at": collection.created_at,
        "updated_at": collection.updated_at,
    }


def list_collections(session: Session, user: User) -> list[dict[str, Any]]:
    query = select(KnowledgeCollection).order_by(KnowledgeCollection.name, KnowledgeCollection.id)
    if not _is_admin(user):
        query = query.where(
            or_(KnowledgeCollection.owner_id == user.id, KnowledgeCollection.shared.is_(True))
        )
    return [_summary(session, user, c) for c in session.scalars(query)]


def get_collection(session: Session, user: User, collection_id: uuid.UUID) -> dict[str, Any]:
    return _summary(session, user, readable(session, user, collection_id))


def create_collection(
    session: Session, runtime: Runtime, user: User, *, name: str, description: str, embedding_model: str
) -> dict[str, Any]:
    _check_model(session, runtime, user, embedding_model)
    collection = KnowledgeCollection(
        owner_id=user.id, name=name.strip() or name, description=description, embedding_model=embedding_model
    )
    session.add(collection)
    session.flush()
    return _summary(session, user, collection)


def _prune_chunks(session: Session, pairs: set[tuple[uuid.UUID, str]]) -> None:
    """Delete the chunks of (file, model) pairs no document uses any more."""
    for file_id, model in pairs:
        used = session.scalar(
            select(func.count())
            .select_from(KnowledgeDocument)
            .where(KnowledgeDocument.file_id == file_id, KnowledgeDocument.embedding_model == model)
        )
        if not used:
            session.execute(
                delete(KnowledgeChunk).where(
                    KnowledgeChunk.file_id == file_id, KnowledgeChunk.embedding_model == model
                )
            )


def _pairs(session: Session, collection_id: uuid.UUID) -> set[tuple[uuid.UUID, str]]:
    rows = session.execute(
        select(KnowledgeDocument.file_id, KnowledgeDocument.embedding_model).where(
            KnowledgeDocument.collection_id == collection_id
        )
    )
    return {(file_id, model) for file_id, model in rows}


def _requeue(session: Session, collection: KnowledgeCollection) -> bool:
    """Queue every document of the collection under its (possibly new) model; whether any was queued."""
    old = _pairs(session, collection.id)
    session.execute(
        update(KnowledgeDocument)
        .where(KnowledgeDocument.collection_id == collection.id)
        .values(
            embedding_model=collection.embedding_model,
            status="queued",
            progress=0.0,
            error=None,
            chunk_count=0,
            claimed_at=None,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    session.flush()
    _prune_chunks(session, {pair for pair in old if pair[1] != collection.embedding_model})
    return bool(old)


def update_collection(
    session: Session, runtime: Runtime, user: User, collection_id: uuid.UUID, changes: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Apply a PATCH; returns the collection and whether documents were queued (a new embedding model)."""
    collection = writable(session, user, collection_id)
    queued = False
    if "shared" in changes and changes["shared"] is not None and changes["shared"] != collection.shared:
        if not _is_admin(user):
            raise Forbidden("only an administrator shares a knowledge collection", code="admin_only")
        collection.shared = bool(changes["shared"])
    if changes.get("name") is not None:
        collection.name = changes["name"]
    if changes.get("description") is not None:
        collection.description = changes["description"]
    model = changes.get("embedding_model")
    if model is not None and model != collection.embedding_model:
        _check_model(session, runtime, user, model)
        collection.embedding_model = model
        session.flush()
        queued = _requeue(session, collection)
    collection.updated_at = utcnow()
    session.flush()
    return _summary(session, user, collection), queued


def delete_collection(session: Session, user: User, collection_id: uuid.UUID) -> None:
    collection = writable(session, user, collection_id)
    pairs = _pairs(session, collection.id)
    session.execute(delete(KnowledgeDocument).where(KnowledgeDocument.collection_id == collection.id))
    session.delete(collection)
    session.flush()
    _prune_chunks(session, pairs)


def add_documents(
    session: Session, user: User, collection_id: uuid.UUID, file_ids: list[uuid.UUID]
) -> list[dict[str, Any]]:
    """Queue the user's files (documents, not images) for indexing in the collection."""
    collection = writable(session, user, collection_id)
    for file_id in dict.fromkeys(file_ids):
        file = session.get(File, file_id)
        if file is None or file.owner_id != user.id:
            raise NotFound("file not found", code="file_not_found")
        if file.kind != "document":
            raise InvalidInput(f"{file.name} is not a document", code="file_not_document")
        doc = session.scalars(
            select(KnowledgeDocument).where(
                KnowledgeDocument.collection_id == collection.id, KnowledgeDocument.file_id == file_id
            )
        ).first()
        if doc is None:
            session.add(
                KnowledgeDocument(
                    collection_id=collection.id, file_id=file_id, embedding_model=collection.embedding_model
                )
            )
        elif doc.status in ("error", "cancelled"):
            doc.status, doc.progress, doc.error, doc.claimed_at = "queued", 0.0, None, None
    collection.updated_at = utcnow()
    session.flush()
    return list_documents(session, user, collection_id)


def list_documents(session: Session, user: User, collection_id: uuid.UUID) -> list[dict[str, Any]]:
    collection = readable(session, user, collection_id)
    rows = session.execute(
        select(KnowledgeDocument, File)
        .join(File, File.id == KnowledgeDocument.file_id)
        .where(KnowledgeDocument.collection_id == collection.id)
        .order_by(File.name, File.id)
    ).all()
    return [
        {
            "file_id": doc.file_id,
            "name": file.name,
            "mime": file.mime,
            "size": file.size,
            "status": doc.status,
            "progress": round(doc.progress, 4),
            "error": doc.error,
            "chunk_count": doc.chunk_count,
            "updated_at": doc.updated_at,
        }
        for doc, file in rows
    ]


def has_pending(session: Session, collection_id: uuid.UUID) -> bool:
    return bool(
        session.scalar(
            select(func.count())
            .select_from(KnowledgeDocument)
            .where(
                KnowledgeDocument.collection_id == collection_id,
                KnowledgeDocument.status.in_(("queued", "indexing")),
            )
        )
    )


def remove_document(session: Session, user: User, collection_id: uuid.UUID, file_id: uuid.UUID) -> None:
    collection = writable(session, user, collection_id)
    doc = session.scalars(
        select(KnowledgeDocument).where(
            KnowledgeDocument.collection_id == collection.id, KnowledgeDocument.file_id == file_id
        )
    ).first()
    if doc is None:
        raise NotFound("this file is not in the collection", code="document_not_found")
    pair = (doc.file_id, doc.embedding_model)
    session.delete(doc)
    session.flush()
    _prune_chunks(session, {pair})


def reindex(session: Session, user: User, collection_id: uuid.UUID) -> dict[str, Any]:
    collection = writable(session, user, collection_id)
    _requeue(session, collection)
    return _summary(session, user, collection)


def cancel(session: Session, user: User, collection_id: uuid.UUID) -> dict[str, Any]:
    """Cancel the collection's queued and running indexing (a running job stops at its next batch)."""
    collection = writable(session, user, collection_id)
    session.execute(
        update(KnowledgeDocument)
        .where(
            KnowledgeDocument.collection_id == collection.id,
            KnowledgeDocument.status.in_(("queued", "indexing")),
        )
        .values(status="cancelled", updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return _summary(session, user, collection)
