"""Uploaded files (POST /api/files) and how a chat message used them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

FileKind = Literal["image", "document"]
AttachmentMode = Literal["image", "full", "retrieval"]


class FileRead(BaseModel):
    """A file of the signed-in user. ``mime`` is the sniffed type (not the client's); a document has
    ``text_chars`` and ``tokens`` (an estimate: about four characters a token), an image neither."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    size: int
    mime: str
    kind: FileKind
    sha256: str
    text_chars: int | None = None
    tokens: int | None = None
    created_at: datetime


class FileList(BaseModel):
    items: list[FileRead]


class AttachmentRead(BaseModel):
    """A file attached to a user message, and how the chat used it: ``image`` (sent to a vision model),
    ``full`` (a document's whole text in the context) or ``retrieval`` (only its best passages)."""

    id: uuid.UUID
    name: str
    mime: str
    size: int
    kind: FileKind
    mode: AttachmentMode
    tokens: int | None = None


class CitationRead(BaseModel):
    """One numbered source of an assistant reply: ``[n]`` in the text is ``number``."""

    number: int
    file_id: uuid.UUID
    file_name: str
    collection_id: uuid.UUID | None = None
    chunk_id: int | None = None
    page: int | None = None
    text: str
