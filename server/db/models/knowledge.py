"""Knowledge collections: a user's collections of files, the indexing state of each file in a
collection, and the chunks of a file cut and embedded for retrieval (docs/knowledge.md).

Chunks belong to a file and an embedding model, not to a collection: a file in two collections with the same
model is chunked once, and a long document attached to a chat is indexed the same way without a collection
(a ``knowledge_documents`` row whose ``collection_id`` is NULL)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, IdMixin, TimestampMixin

DOCUMENT_STATUSES = ("queued", "indexing", "ready", "error", "cancelled")


class KnowledgeCollection(IdMixin, TimestampMixin, Base):
    """A named set of files searched together. ``shared`` (set by an admin) lets every user read and use it;
    only its owner (or an admin) changes it."""

    __tablename__ = "knowledge_collections"
    __table_args__ = (Index("ix_knowledge_collections_owner_id", "owner_id"),)

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    #: The model id (as GET /api/models lists it) that embeds this collection's chunks and queries.
    embedding_model: Mapped[str] = mapped_column(String(1200))
    shared: Mapped[bool] = mapped_column(Boolean, default=False)


class KnowledgeDocument(IdMixin, TimestampMixin, Base):
    """One file to index with one embedding model: in a collection, or (``collection_id`` NULL) a long
    document attached to a chat. The indexing job's state lives here, so any worker can claim it (a
    conditional UPDATE from ``queued`` to ``indexing``), report progress, and see a cancel."""

    __tablename__ = "knowledge_documents"
    __table_args__ = (
        UniqueConstraint("collection_id", "file_id", name="uq_knowledge_documents_collection_file"),
        Index("ix_knowledge_documents_file_id_embedding_model", "file_id", "embedding_model"),
        Index("ix_knowledge_documents_status", "status"),
        CheckConstraint("status IN ('queued', 'indexing', 'ready', 'error', 'cancelled')", name="status"),
    )

    collection_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("knowledge_collections.id", ondelete="CASCADE"), default=None
    )
    file_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    embedding_model: Mapped[str] = mapped_column(String(1200))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    #: 0.0 .. 1.0 while indexing.
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    #: When a worker claimed it (a claim older than the stale limit is taken over by another worker).
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)


class KnowledgeChunk(Base):
    """A passage of a file: its text, where it is (page, character offsets) and its embedding (float32,
    little-endian) under ``embedding_model``. Full-text search: FTS5 (SQLite) / a GIN index (PostgreSQL),
    created by revision 0015."""

    __tablename__ = "knowledge_chunks"
    __table_args__ = (
        UniqueConstraint(
            "file_id", "embedding_model", "ordinal", name="uq_knowledge_chunks_file_model_ordinal"
        ),
        Index("ix_knowledge_chunks_embedding_model", "embedding_model"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    embedding_model: Mapped[str] = mapped_column(String(1200))
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    page: Mapped[int | None] = mapped_column(Integer, default=None)
    char_start: Mapped[int] = mapped_column(Integer, default=0)
    char_end: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
