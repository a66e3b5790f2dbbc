"""The events of a chat stream (``POST /api/chat`` and ``/api/chat/{id}/regenerate``, ``text/event-stream``).

Each Server-Sent Event has a name (the ``event:`` field) and one JSON object (the ``data:`` lines). The
order is: ``meta``; any number of ``delta``; then ``done`` or ``error``; then, only when the server
titled a new conversation after its first exchange, ``title``; then the stream ends. ``: ping`` comments
may come at any time. :class:`ChatStreamEvent` describes one event as ``{"event": name, "data": payload}``
so that the OpenAPI document (and the web UI's generated types) carry every payload's shape.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from server.schemas.file import AttachmentRead, CitationRead
from server.schemas.message import MessageRead, MessageStatusName


class _Payload(BaseModel):
    #: Undeclared fields are refused, so a test validating what the pipeline sends notices any drift.
    model_config = ConfigDict(extra="forbid")


class ChatStreamMeta(_Payload):
    """First event: the conversation and the two messages of this exchange (already saved)."""

    conversation_id: uuid.UUID
    #: The prompt answered (for a regenerated reply: the existing prompt).
    user_message_id: uuid.UUID
    assistant_message_id: uuid.UUID
    #: The prompt's files and how each is used (image, whole document, or its best passages).
    attachments: list[AttachmentRead] = Field(default_factory=list)
    #: The numbered sources given to the model (also saved on the reply).
    citations: list[CitationRead] = Field(default_factory=list)


class ChatStreamDelta(_Payload):
    """New text of the reply since the previous delta (coalesced). Only non-empty parts are sent."""

    content: str = ""
    thinking: str = ""


class ChatStreamMessageStub(_Payload):
    """What ``done`` carries instead of the message when its final state could not be saved (``id`` and
    ``status`` only) or the message was deleted while it streamed (empty)."""

    id: uuid.UUID | None = None
    status: MessageStatusName | None = None


class ChatStreamDone(_Payload):
    """The reply ended (complete, or stopped by the user, a disconnect or a shutdown)."""

    message: MessageRead | ChatStreamMessageStub
    #: Token counts reported by the upstream (e.g. prompt_tokens, completion_tokens); may be empty.
    usage: dict[str, int]
    #: Milliseconds: first_token_ms, total_ms, and what the upstream reports (load_ms, generate_ms...).
    timings: dict[str, float]


class ChatStreamError(_Payload):
    """The reply failed after the stream started; the text received so far is kept."""

    code: str
    message: str
    message_id: uuid.UUID


class ChatStreamTitle(_Payload):
    """The title the server generated for a new conversation after its first exchange (already saved)."""

    conversation_id: uuid.UUID
    title: str


class ChatStreamMetaEvent(_Payload):
    event: Literal["meta"]
    data: ChatStreamMeta


class ChatStreamDeltaEvent(_Payload):
    event: Literal["delta"]
    data: ChatStreamDelta


class ChatStreamDoneEvent(_Payload):
    event: Literal["done"]
    data: ChatStreamDone


class ChatStreamErrorEvent(_Payload):
    event: Literal["error"]
    data: ChatStreamError


class ChatStreamTitleEvent(_Payload):
    event: Literal["title"]
    data: ChatStreamTitle


_AnyChatStreamEvent = Annotated[
    (
        ChatStreamMetaEvent
        | ChatStreamDeltaEvent
        | ChatStreamDoneEvent
        | ChatStreamErrorEvent
        | ChatStreamTitleEvent
    ),
    Field(discriminator="event"),
]


class ChatStreamEvent(RootModel[_AnyChatStreamEvent]):
    """One event of a chat stream: ``event`` is the SSE event name, ``data`` the JSON of its data lines."""
