"""Retrieval: the passages of files and collections closest to a question, for the chat (numbered sources and
citations) and for ``POST /api/knowledge/{id}/search``. Hybrid: vector similarity under each collection's
embedding model and full-text ranking, merged by reciprocal rank fusion (services/knowledge/index.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from server.db.models import File, KnowledgeChunk, KnowledgeCollection, KnowledgeDocument, User
from server.db.session import session_scope
from server.errors import NotFound
from server.runtime import Runtime
from server.services.knowledge import collections as collections_service
from server.services.knowledge import embedding, index, indexer


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved passage; ``number`` is its 1-based citation number in the answer."""

    number: int
    file_id: uuid.UUID
    file_name: str
    collection_id: uuid.UUID | None
    chunk_id: int
    text: str
    page: int | None
    score: float


@dataclass
class _Group:
    """Files searched with one embedding model, and the collection each file is cited from."""

    model: str
    files: dict[uuid.UUID, uuid.UUID | None]


def default_embedding_model(session: Session, runtime: Runtime, user: User) -> str:
    """The model that indexes a user's attached long documents: their newest collection's, else the
    ``knowledge_embedding_model`` setting, else "" (full text only)."""
    newest = session.scalar(
        select(KnowledgeCollection.embedding_model)
        .where(KnowledgeCollection.owner_id == user.id)
        .order_by(KnowledgeCollection.updated_at.desc())
        .limit(1)
    )
    return newest or runtime.settings.knowledge_embedding_model


def _attached_documents(
    runtime: Runtime, user_id: uuid.UUID, file_ids: Sequence[uuid.UUID]
) -> tuple[str, list[uuid.UUID]]:
    """Queue (once) the attached files not yet indexed; the model and the documents to index now."""
    with session_scope(runtime.session_factory) as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound("user not found", code="user_not_found")
        model = default_embedding_model(session, runtime, user)
        todo: list[uuid.UUID] = []
        for file_id in dict.fromkeys(file_ids):
            file = session.get(File, file_id)
            if file is None or file.owner_id != user.id:
                raise NotFound("file not found", code="file_not_found")
            doc = session.scalars(
                select(KnowledgeDocument).where(
                    KnowledgeDocument.collection_id.is_(None),
                    KnowledgeDocument.file_id == file_id,
                    KnowledgeDocument.embedding_model == model,
                )
            ).first()
            if doc is None:
                doc = KnowledgeDocument(collection_id=None, file_id=file_id, embedding_model=model)
                session.add(doc)
                session.flush()
            if doc.status in ("queued", "cancelled", "error", "indexing"):
                if doc.status in ("cancelled", "error"):
                    doc.status, doc.progress, doc.error = "queued", 0.0, None
                todo.append(doc.id)
        return model, todo


def _reading(runtime: Runtime) -> sessionmaker[Session]:
    """Searches only read: DEFERRED transactions on SQLite, never the write lock (where vectors are kept in
    process, loading a big matrix takes seconds, and writers must not wait for it)."""
    return runtime.read_session_factory or runtime.session_factory


def _groups(
    runtime: Runtime,
    user_id: uuid.UUID,
    attached_model: str | None,
    file_ids: Sequence[uuid.UUID],
    collection_ids: Sequence[uuid.UUID],
) -> list[_Group]:
    groups: dict[str, _Group] = {}
    with session_scope(_reading(runtime)) as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound("user not found", code="user_not_found")
        for collection_id in dict.fromkeys(collection_ids):
            collection = collections_service.readable(session, user, collection_id)
            ready = session.scalars(
                select(KnowledgeDocument.file_id).where(
                    KnowledgeDocument.collection_id == collection.id,
                    KnowledgeDocument.status == "ready",
                    KnowledgeDocument.embedding_model == collection.embedding_model,
                )
            ).all()
            group = groups.setdefault(collection.embedding_model, _Group(collection.embedding_model, {}))
            for fid in ready:
                group.files.setdefault(fid, collection.id)
        if attached_model is not None and file_ids:
            ready_attached = session.scalars(
                select(KnowledgeDocument.file_id).where(
                    KnowledgeDocument.collection_id.is_(None),
                    KnowledgeDocument.file_id.in_(list(file_ids)),
                    KnowledgeDocument.embedding_model == attached_model,
                    KnowledgeDocument.status == "ready",
                )
            ).all()
            group = groups.setdefault(attached_model, _Group(attached_model, {}))
            for fid in ready_attached:
                group.files[fid] = None
    return [g for g in groups.values() if g.files]


def _rank(runtime: Runtime, group: _Group, query: str, vector: np.ndarray | None) -> list[tuple[int, float]]:
    with session_scope(_reading(runtime)) as session:
        files = list(group.files)
        if vector is None:
            return index.fuse(index.text_search(session, group.model, query, files))
        hits = index.vector_search(runtime, session, group.model, vector, files)
        by_text = index.text_search(session, group.model, query, files, drop_frequent=True)
        return index.fuse([cid for cid, _ in hits], by_text)


def _load(runtime: Runtime, hits: list[tuple[int, float, _Group]]) -> list[Passage]:
    if not hits:
        return []
    with session_scope(_reading(runtime)) as session:
        rows = session.execute(
            select(KnowledgeChunk, File.name)
            .join(File, File.id == KnowledgeChunk.file_id)
            .where(KnowledgeChunk.id.in_([h[0] for h in hits]))
        ).all()
        by_id = {chunk.id: (chunk, name) for chunk, name in rows}
        passages: list[Passage] = []
        for chunk_id, score, group in hits:
            found = by_id.get(chunk_id)
            if found is None:
                continue
            chunk, name = found
            passages.append(
                Passage(
                    number=len(passages) + 1,
                    file_id=chunk.file_id,
                    file_name=name,
                    collection_id=group.files.get(chunk.file_id),
                    chunk_id=chunk.id,
                    text=chunk.text,
                    page=chunk.page,
                    score=round(score, 6),
                )
            )
        return passages


async def search(
    runtime: Runtime,
    user_id: uuid.UUID,
    *,
    query: str,
    file_ids: Sequence[uuid.UUID] = (),
    collection_ids: Sequence[uuid.UUID] = (),
    limit: int,
    attached_model: str | None = None,
) -> list[Passage]:
    """The ``limit`` best passages among the ready chunks of ``collection_ids`` (readable by the user, else
    404) and of the attached ``file_ids`` (indexed under ``attached_model``)."""
    groups = await to_thread.run_sync(_groups, runtime, user_id, attached_model, file_ids, collection_ids)
    vectors: list[np.ndarray | None] = []
    for group in groups:
        vector = None
        if group.model:
            vector = (await embedding.embed_texts(runtime, group.model, [query], user_id=user_id))[0]
        vectors.append(vector)
    return await to_thread.run_sync(_rank_and_load, runtime, groups, vectors, query, limit)


def _rank_and_load(
    runtime: Runtime, groups: list[_Group], vectors: list[np.ndarray | None], query: str, limit: int
) -> list[Passage]:
    """Rank each group, keep the best ``limit`` over all, load them (one worker thread for all of it)."""
    merged: dict[int, tuple[float, _Group]] = {}
    for group, vector in zip(groups, vectors, strict=True):
        for chunk_id, score in _rank(runtime, group, query, vector):
            if chunk_id not in merged or merged[chunk_id][0] < score:
                merged[chunk_id] = (score, group)
    best = sorted(merged.items(), key=lambda item: (-item[1][0], item[0]))[: max(0, limit)]
    return _load(runtime, [(cid, s, g) for cid, (s, g) in best])


async def ensure_indexed(runtime: Runtime, user_id: uuid.UUID, file_ids: Sequence[uuid.UUID]) -> str:
    """Index the user's attached files that are not yet (waits for them); returns the embedding model.
    Another user's file -> 404 ``file_not_found``."""
    model, todo = await to_thread.run_sync(_attached_documents, runtime, user_id, file_ids)
    for doc_id in todo:
        await indexer.index_document(runtime, doc_id)
    return model


async def passages_for_chat(
    runtime: Runtime,
    session: Session,
    user: User,
    *,
    query: str,
    file_ids: Sequence[uuid.UUID],
    collection_ids: Sequence[uuid.UUID],
    limit: int,
) -> list[Passage]:
    """The chat's numbered sources: the best ``limit`` passages of the attached long documents (indexed on
    demand with the user's default embedding model, which may take a while for a new long document) and of
    the chosen collections. Another user's file -> 404 ``file_not_found``; a collection the user cannot read
    -> 404 ``collection_not_found``.

    ``session`` is the caller's: it is committed first (ending its transaction, so that on SQLite it holds
    no lock while this function writes the index on connections of its own and waits for the embedding
    model); nothing else is done with it."""
    user_id = user.id
    if session.in_transaction():
        await to_thread.run_sync(session.commit)
    attached_model = await ensure_indexed(runtime, user_id, file_ids) if file_ids else None
    return await search(
        runtime,
        user_id,
        query=query,
        file_ids=file_ids,
        collection_ids=collection_ids,
        limit=limit,
        attached_model=attached_model,
    )
