"""knowledge collections and retrieval index

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 00:00:00

Three tables (server/db/models/knowledge.py) and the full-text index of the chunks: an FTS5 external-content
table kept in sync by triggers on SQLite, an expression GIN index on to_tsvector('simple', text) on
PostgreSQL (the same scheme as revision 0002). On PostgreSQL with the pgvector extension available, also a
``vector`` column ``embedding_vec`` beside the float32 bytes (services/knowledge/index.py searches it; its
HNSW indexes are created per dimension when first needed). The extension is created when the role may;
without it the server searches the bytes in process, as on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db.base

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_UP = [
    "CREATE VIRTUAL TABLE knowledge_chunks_fts USING fts5("
    "text, content='knowledge_chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER knowledge_chunks_fts_ai AFTER INSERT ON knowledge_chunks BEGIN "
    "INSERT INTO knowledge_chunks_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER knowledge_chunks_fts_ad AFTER DELETE ON knowledge_chunks BEGIN "
    "INSERT INTO knowledge_chunks_fts(knowledge_chunks_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER knowledge_chunks_fts_au AFTER UPDATE OF text ON knowledge_chunks BEGIN "
    "INSERT INTO knowledge_chunks_fts(knowledge_chunks_fts, rowid, text) "
    "VALUES ('delete', old.id, old.text); "
    "INSERT INTO knowledge_chunks_fts(rowid, text) VALUES (new.id, new.text); END",
]
_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS knowledge_chunks_fts_au",
    "DROP TRIGGER IF EXISTS knowledge_chunks_fts_ad",
    "DROP TRIGGER IF EXISTS knowledge_chunks_fts_ai",
    "DROP TABLE IF EXISTS knowledge_chunks_fts",
]
_POSTGRES_UP = [
    "CREATE INDEX ix_knowledge_chunks_text_fts ON knowledge_chunks USING gin (to_tsvector('simple', text))",
]
_POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS ix_knowledge_chunks_text_fts",
]


def _pgvector() -> None:
    bind = op.get_bind()
    available = bind.exec_driver_sql("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").first()
    if available is None:
        return
    installed = bind.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'vector'").first()
    if installed is None:
        savepoint = bind.begin_nested()
        try:
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
        except sa.exc.DBAPIError:  # not allowed for this role: search in process instead
            savepoint.rollback()
            return
        savepoint.commit()
    bind.exec_driver_sql("ALTER TABLE knowledge_chunks ADD COLUMN embedding_vec vector")


def upgrade() -> None:
    dt = server.db.base.UTCDateTime(timezone=True)
    op.create_table(
        "knowledge_collections",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("embedding_model", sa.String(length=1200), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("created_at", dt, nullable=False),
        sa.Column("updated_at", dt, nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_knowledge_collections_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_collections")),
    )
    op.create_index("ix_knowledge_collections_owner_id", "knowledge_collections", ["owner_id"])
    op.create_table(
        "knowledge_documents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("collection_id", sa.Uuid(), nullable=True),
        sa.Column("file_id", sa.Uuid(), nullable=False),
        sa.Column("embedding_model", sa.String(length=1200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("claimed_at", dt, nullable=True),
        sa.Column("created_at", dt, nullable=False),
        sa.Column("updated_at", dt, nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'indexing', 'ready', 'error', 'cancelled')",
            name=op.f("ck_knowledge_documents_status"),
        ),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["knowledge_collections.id"],
            name=op.f("fk_knowledge_documents_collection_id_knowledge_collections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_knowledge_documents_file_id_files"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_documents")),
        sa.UniqueConstraint("collection_id", "file_id", name=op.f("uq_knowledge_documents_collection_file")),
    )
    op.create_index(
        "ix_knowledge_documents_file_id_embedding_model",
        "knowledge_documents",
        ["file_id", "embedding_model"],
    )
    op.create_index("ix_knowledge_documents_status", "knowledge_documents", ["status"])
    op.create_table(
        "knowledge_chunks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("file_id", sa.Uuid(), nullable=False),
        sa.Column("embedding_model", sa.String(length=1200), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=True),
        sa.Column("char_start", sa.Integer(), nullable=False),
        sa.Column("char_end", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_knowledge_chunks_file_id_files"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_chunks")),
        sa.UniqueConstraint(
            "file_id", "embedding_model", "ordinal", name=op.f("uq_knowledge_chunks_file_model_ordinal")
        ),
    )
    op.create_index("ix_knowledge_chunks_embedding_model", "knowledge_chunks", ["embedding_model"])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for sql in _SQLITE_UP:
            op.execute(sql)
    elif dialect == "postgresql":
        for sql in _POSTGRES_UP:
            op.execute(sql)
        _pgvector()


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for sql in _SQLITE_DOWN:
            op.execute(sql)
    elif dialect == "postgresql":
        for sql in _POSTGRES_DOWN:
            op.execute(sql)
    op.drop_index("ix_knowledge_chunks_embedding_model", table_name="knowledge_chunks")
    op.drop_table("knowledge_chunks")
    op.drop_index("ix_knowledge_documents_status", table_name="knowledge_documents")
    op.drop_index("ix_knowledge_documents_file_id_embedding_model", table_name="knowledge_documents")
    op.drop_table("knowledge_documents")
    op.drop_index("ix_knowledge_collections_owner_id", table_name="knowledge_collections")
    op.drop_table("knowledge_collections")
