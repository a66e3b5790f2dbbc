"""Uploaded files (images and documents) and the attachments of a user message."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db.base import Base, IdMixin, TimestampMixin


class File(IdMixin, TimestampMixin, Base):
    """One uploaded file, owned by its uploader. The bytes live at ``<data dir>/<storage_key>`` (never a
    name the client chose); a document's extracted text is cached next to them (``<storage_key>.txt``)."""

    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_owner_id_created_at", "owner_id", "created_at"),
        CheckConstraint("kind IN ('image', 'document')", name="kind"),
    )

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: The name the client gave (shown, never used as a path).
    name: Mapped[str] = mapped_column(String(255))
    #: The sniffed content type (not the client's).
    mime: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    #: Relative to the data directory, e.g. ``files/ab/<uuid>``.
    storage_key: Mapped[str] = mapped_column(String(200))
    #: A document's extracted text: its length and a token estimate (null for images).
    text_chars: Mapped[int | None] = mapped_column(Integer, default=None)
    tokens: Mapped[int | None] = mapped_column(Integer, default=None)


class MessageFile(Base):
    """A user message's attachments, in the order they were sent."""

    __tablename__ = "message_files"
    __table_args__ = (Index("ix_message_files_file_id", "file_id"),)

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    file_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    #: How the chat used it: ``image``, ``full`` (a document's whole text) or ``retrieval`` (its best
    #: passages only).
    mode: Mapped[str] = mapped_column(String(16), default="full")
