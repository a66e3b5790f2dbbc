"""Knowledge collections: create/update bodies, the collection and document read models, search."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from server.schemas.common import StrictModel

DocumentStatus = Literal["queued", "indexing", "ready", "error", "cancelled"]
CollectionStatus = Literal["empty", "indexing", "ready", "error"]


class CollectionCreate(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    #: A model id from GET /api/models whose provider computes embeddings (Ollama /api/embed, /v1/embeddings).
    embedding_model: str = Field(min_length=1, max_length=1200)


class CollectionUpdate(StrictModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=4000)
    #: A new embedding model re-indexes every document of the collection.
    embedding_model: str | None = Field(default=None, min_length=1, max_length=1200)
    #: Admins only: every user may then read and use the collection (not change it).
    shared: bool | None = None


class CollectionRead(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    embedding_model: str
    shared: bool
    owner_id: uuid.UUID
    #: Whether the caller may change it (its owner or an admin).
    writable: bool
    status: CollectionStatus
    document_count: int
    chunk_count: int
    #: 0..1 over the documents still indexing (1 when none is).
    progress: float
    created_at: datetime
    updated_at: datetime


class DocumentsAdd(StrictModel):
    file_ids: list[uuid.UUID] = Field(min_length=1, max_length=500)


class DocumentRead(BaseModel):
    file_id: uuid.UUID
    name: str
    mime: str
    size: int
    status: DocumentStatus
    progress: float
    error: str | None
    chunk_count: int
    updated_at: datetime


class SearchRequest(StrictModel):
    query: str = Field(min_length=1, max_length=2000)
    limit: int = Field(default=5, ge=1, le=50)


class PassageRead(BaseModel):
    number: int
    file_id: uuid.UUID
    file_name: str
    collection_id: uuid.UUID | None
    chunk_id: int
    text: str
    page: int | None
    score: float
