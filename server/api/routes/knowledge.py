"""Knowledge collections (docs/knowledge.md): CRUD, their documents and indexing progress, re-index, cancel,
and search. Indexing runs in the background; the UI polls ``GET /api/knowledge/{id}/documents``."""

from __future__ import annotations

import uuid

from anyio import to_thread
from fastapi import APIRouter, Response, status
from sqlalchemy.orm import Session

from server.api.openapi import raises
from server.deps import CurrentUser, RuntimeDep, SessionDep
from server.errors import Forbidden, InvalidInput, NotFound, UpstreamError
from server.runtime import Runtime
from server.schemas.knowledge import (
    CollectionCreate,
    CollectionRead,
    CollectionUpdate,
    DocumentRead,
    DocumentsAdd,
    PassageRead,
    SearchRequest,
)
from server.services.knowledge import collections as collections_service
from server.services.knowledge import indexer, retrieval

#: 404 collection/file/model not found, 403 read-only or admin-only, 422 not an embedding model or not a
#: document, 502 the embedding model failed (search, and a re-index's model check).
router = APIRouter(
    prefix="/api/knowledge",
    tags=["knowledge"],
    responses=raises(NotFound, Forbidden, InvalidInput, UpstreamError),
)


def _commit_and_kick(runtime: Runtime, session: Session) -> None:
    session.commit()  # the indexer reads the queued rows on its own connections
    indexer.kick(runtime)


@router.get("", response_model=list[CollectionRead], summary="Your knowledge collections and the shared ones")
def list_collections(user: CurrentUser, session: SessionDep) -> list[CollectionRead]:
    items = collections_service.list_collections(session, user)
    return [CollectionRead.model_validate(c) for c in items]


@router.post(
    "", response_model=CollectionRead, status_code=status.HTTP_201_CREATED, summary="Create a collection"
)
def create_collection(
    body: CollectionCreate, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> CollectionRead:
    created = collections_service.create_collection(
        session,
        runtime,
        user,
        name=body.name,
        description=body.description,
        embedding_model=body.embedding_model,
    )
    return CollectionRead.model_validate(created)


@router.get(
    "/{collection_id}", response_model=CollectionRead, summary="One collection and its indexing state"
)
def get_collection(collection_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> CollectionRead:
    return CollectionRead.model_validate(collections_service.get_collection(session, user, collection_id))


@router.patch(
    "/{collection_id}",
    response_model=CollectionRead,
    summary="Rename, describe, change the embedding model (re-indexes) or share (admins)",
)
async def update_collection(
    collection_id: uuid.UUID,
    body: CollectionUpdate,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
) -> CollectionRead:
    changes = body.model_dump(exclude_unset=True)
    updated, queued = await to_thread.run_sync(
        lambda: collections_service.update_collection(session, runtime, user, collection_id, changes)
    )
    if queued:
        _commit_and_kick(runtime, session)
    return CollectionRead.model_validate(updated)


@router.delete(
    "/{collection_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a collection (not its files)"
)
def delete_collection(collection_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    collections_service.delete_collection(session, user, collection_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{collection_id}/documents",
    response_model=list[DocumentRead],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Add your uploaded documents (POST /api/files) to the collection; indexing is queued",
)
async def add_documents(
    collection_id: uuid.UUID, body: DocumentsAdd, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> list[DocumentRead]:
    docs = await to_thread.run_sync(
        lambda: collections_service.add_documents(session, user, collection_id, body.file_ids)
    )
    _commit_and_kick(runtime, session)
    return [DocumentRead.model_validate(d) for d in docs]


@router.get(
    "/{collection_id}/documents",
    response_model=list[DocumentRead],
    summary="The collection's documents with their indexing status and progress (poll this)",
)
async def list_documents(
    collection_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> list[DocumentRead]:
    def read() -> tuple[list[dict[str, object]], bool]:
        docs = collections_service.list_documents(session, user, collection_id)
        return docs, any(d["status"] in ("queued", "indexing") for d in docs)

    docs, pending = await to_thread.run_sync(read)
    if pending:
        indexer.kick(runtime)  # picks up work queued by a worker that has since gone (or a stale claim)
    return [DocumentRead.model_validate(d) for d in docs]


@router.delete(
    "/{collection_id}/documents/{file_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a document from the collection (the file stays)",
)
def remove_document(
    collection_id: uuid.UUID, file_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> Response:
    collections_service.remove_document(session, user, collection_id, file_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{collection_id}/reindex",
    response_model=CollectionRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Index every document of the collection again",
)
async def reindex(
    collection_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> CollectionRead:
    summary = await to_thread.run_sync(lambda: collections_service.reindex(session, user, collection_id))
    _commit_and_kick(runtime, session)
    return CollectionRead.model_validate(summary)


@router.post(
    "/{collection_id}/cancel",
    response_model=CollectionRead,
    summary="Cancel the collection's indexing (a running document stops at its next batch)",
)
def cancel(collection_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> CollectionRead:
    return CollectionRead.model_validate(collections_service.cancel(session, user, collection_id))


@router.post(
    "/{collection_id}/search",
    response_model=list[PassageRead],
    summary="The passages of the collection closest to a query (hybrid: vectors and full text)",
)
async def search(
    collection_id: uuid.UUID, body: SearchRequest, user: CurrentUser, runtime: RuntimeDep
) -> list[PassageRead]:
    passages = await retrieval.search(
        runtime, user.id, query=body.query, collection_ids=[collection_id], limit=body.limit
    )
    return [PassageRead.model_validate(p, from_attributes=True) for p in passages]
