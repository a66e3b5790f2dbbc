"""Conversations: list/detail/update, search results, and the versioned export/import format."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server.schemas.common import JsonScalars, Page, StrictModel
from server.schemas.message import ChatOptions, MessageRead, MessageRole, MessageStatusName

EXPORT_FORMAT = "modeltrain.conversations"
EXPORT_VERSION = 1


class ConversationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    title_edited: bool
    pinned: bool
    model: str
    created_at: datetime
    updated_at: datetime
    message_count: int | None = None
    #: The knowledge collections this conversation uses; null: none.
    knowledge: list[uuid.UUID] | None = None


class ConversationDetail(ConversationRead):
    system_prompt: str
    options: dict[str, Any]
    #: Every message of every branch, oldest first; ``parent_id`` links the tree.
    messages: list[MessageRead]


class ConversationUpdate(StrictModel):
    title: str | None = Field(default=None, min_length=1, max_length=300)
    pinned: bool | None = None
    system_prompt: str | None = Field(default=None, max_length=100_000)
    options: ChatOptions | None = None
    model: str | None = Field(default=None, max_length=400)

    @field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        if not value:
            raise ValueError("must not be blank")
        return value


class SearchHit(ConversationRead):
    #: Plain text around the match (no markup); ``highlights`` are [start, end) offsets into it.
    snippet: str
    highlights: list[tuple[int, int]]
    #: The best matching message, or None when only the title matched.
    message_id: uuid.UUID | None


ConversationPage = Page[ConversationRead]
SearchPage = Page[SearchHit]


# --- export / import (version 1). Field names are part of the file format: change only with a version bump.


class ExportMessage(StrictModel):
    id: str = Field(min_length=1, max_length=64)
    parent_id: str | None = Field(default=None, max_length=64)
    role: MessageRole
    content: str = ""
    thinking: str = ""
    status: MessageStatusName = "complete"
    model: str = Field(default="", max_length=400)
    created_at: datetime
    updated_at: datetime | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    #: The names and types of a user message's files (not their content: an import has none of them).
    attachments: list[dict[str, Any]] | None = Field(default=None, max_length=100)
    #: An assistant reply's numbered sources.
    citations: list[dict[str, Any]] | None = Field(default=None, max_length=200)

    @field_validator("created_at", "updated_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must include a time zone (e.g. 2026-01-01T00:00:00Z)")
        return value


class ExportConversation(StrictModel):
    id: str = Field(min_length=1, max_length=64)
    title: str = Field(default="", max_length=300)
    title_edited: bool = False
    pinned: bool = False
    model: str = Field(default="", max_length=400)
    system_prompt: str = ""
    options: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime | None = None
    messages: list[ExportMessage] = Field(default_factory=list)

    @field_validator("created_at", "updated_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must include a time zone (e.g. 2026-01-01T00:00:00Z)")
        return value


class ConversationExport(JsonScalars):
    """The whole file. Unknown top-level keys are ignored (forward-compatible metadata); unknown keys
    inside conversations and messages are refused so nothing is silently dropped."""

    format: Literal["modeltrain.conversations"]
    version: Literal[1]
    exported_at: datetime | None = None
    conversations: list[ExportConversation]


class ConversationImportRead(BaseModel):
    imported: int
    messages: int
    #: old conversation id (from the file) -> new id
    ids: dict[str, uuid.UUID]
