"""Messages and the chat request bodies (POST /api/chat, regenerate, stop)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.schemas.common import StrictModel
from server.schemas.file import AttachmentRead, CitationRead

#: At most this many files on one message.
MAX_ATTACHMENTS = 20

MessageRole = Literal["system", "user", "assistant"]
MessageStatusName = Literal["streaming", "complete", "stopped", "error"]


class ServedBy(BaseModel):
    provider_id: str
    name: str


class MessageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    parent_id: uuid.UUID | None
    role: MessageRole
    content: str
    thinking: str
    status: MessageStatusName
    model: str
    created_at: datetime
    updated_at: datetime
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    #: A reply of a routed model (a host group or a route): the host that served it; null otherwise.
    served_by: ServedBy | None = None
    #: A user message's files and how the chat used each (docs/attachments.md).
    attachments: list[AttachmentRead] = Field(default_factory=list)
    #: An assistant reply's numbered sources (retrieved passages); null when it used none.
    citations: list[CitationRead] | None = None


class ChatOptions(StrictModel):
    """Generation options a chat request may set; they override the conversation's and the model's."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=1000)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    context_length: int | None = Field(default=None, ge=1, le=10_000_000)
    seed: int | None = None
    stop: list[str] | None = Field(default=None, max_length=16)
    repeat_penalty: float | None = Field(default=None, ge=0, le=10)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    think: bool | None = None

    def compact(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ChatCreate(StrictModel):
    """POST /api/chat. Omit ``parent_id`` to continue the newest branch; send ``parent_id: null`` to start
    a new root branch (editing the first message); send the parent of an edited message to edit it."""

    model: str = Field(min_length=1, max_length=400)
    content: str = Field(min_length=1)
    conversation_id: uuid.UUID | None = None
    parent_id: uuid.UUID | None = None
    options: ChatOptions | None = None
    #: Files (``POST /api/files``) to attach to this message: images go to a vision model, documents into
    #: the context (whole when short, their best passages when long).
    attachments: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    #: The knowledge collections this conversation uses from now on (stored on it); null: unchanged.
    knowledge: list[uuid.UUID] | None = Field(default=None, max_length=MAX_ATTACHMENTS)


class ChatRegenerate(StrictModel):
    """A new reply to the same prompt: the prompt keeps its attachments; ``attachments`` adds files to it."""

    model: str | None = Field(default=None, min_length=1, max_length=400)
    options: ChatOptions | None = None
    attachments: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    knowledge: list[uuid.UUID] | None = Field(default=None, max_length=MAX_ATTACHMENTS)


class ChatStopRead(BaseModel):
    id: uuid.UUID
    status: MessageStatusName
    stopped: bool
