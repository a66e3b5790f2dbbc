"""Conversations: per-user listing, detail, update, delete, and the branch a reader sees.

Ownership rule (docs/security.md, C1): every lookup is scoped to the current user, and another user's ids
answer exactly like ids that do not exist (404), never 403. Search is in ``conversation_search``, export
and import in ``conversation_transfer``.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session

from server.db.models import Conversation, Message, User
from server.errors import NotFound
from server.schemas.conversation import ConversationDetail, ConversationRead, ConversationUpdate
from server.schemas.file import AttachmentRead
from server.schemas.message import MessageRead
from server.services import files as files_service
from server.settings import Settings

FALLBACK_TITLE_CHARS = 50


# --- lookups -------------------------------------------------------------------------------------------


def get_conversation(session: Session, user: User, conversation_id: uuid.UUID) -> Conversation:
    conv = session.get(Conversation, conversation_id)
    if conv is None or conv.user_id != user.id:
        raise NotFound("conversation not found", code="conversation_not_found")
    return conv


def get_message(session: Session, user: User, message_id: uuid.UUID) -> tuple[Message, Conversation]:
    """A message of one of ``user``'s conversations (404 otherwise)."""
    row = session.execute(
        select(Message, Conversation)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(Message.id == message_id, Conversation.user_id == user.id)
    ).first()
    if row is None:
        raise NotFound("message not found", code="message_not_found")
    return row[0], row[1]


def list_messages(session: Session, conversation_id: uuid.UUID) -> list[Message]:
    return list(
        session.scalars(
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.created_at, Message.id)
        )
    )


def fallback_title(text_: str) -> str:
    """The first ~50 characters of the first user message, on one line, cut at a word boundary."""
    flat = " ".join(text_.split())
    if len(flat) <= FALLBACK_TITLE_CHARS:
        return flat or "New conversation"
    cut = flat[:FALLBACK_TITLE_CHARS]
    space = cut.rfind(" ")
    if space >= FALLBACK_TITLE_CHARS // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def current_branch(messages: list[Message]) -> list[Message]:
    """The branch a reader sees: from the root to the most recently created leaf."""
    if not messages:
        return []
    by_id = {m.id: m for m in messages}
    has_child = {m.parent_id for m in messages if m.parent_id}
    leaves = [m for m in messages if m.id not in has_child]
    leaf = max(leaves, key=lambda m: (m.created_at, str(m.id)))
    path = []
    node: Message | None = leaf
    seen: set[uuid.UUID] = set()
    while node is not None and node.id not in seen:
        seen.add(node.id)
        path.append(node)
        node = by_id.get(node.parent_id) if node.parent_id else None
    return list(reversed(path))


# --- list / detail / update / delete --------------------------------------------------------------------


def message_counts(session: Session, conversation_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Messages per conversation, for one page of conversations only (one grouped query)."""
    if not conversation_ids:
        return {}
    rows = session.execute(
        select(Message.conversation_id, func.count(Message.id))
        .where(Message.conversation_id.in_(conversation_ids))
        .group_by(Message.conversation_id)
    )
    return dict(rows.all())


def list_conversations(
    session: Session, user: User, page: int, size: int
) -> tuple[list[ConversationRead], int]:
    total = session.scalar(
        select(func.count()).select_from(Conversation).where(Conversation.user_id == user.id)
    )
    convs = list(
        session.scalars(
            select(Conversation)
            .where(Conversation.user_id == user.id)
            # (user_id, pinned, updated_at) is indexed: the page is read in index order, no full sort.
            .order_by(Conversation.pinned.desc(), Conversation.updated_at.desc())
            .offset((page - 1) * size)
            .limit(size)
        )
    )
    counts = message_counts(session, [c.id for c in convs])
    items = [
        ConversationRead.model_validate(conv).model_copy(update={"message_count": counts.get(conv.id, 0)})
        for conv in convs
    ]
    return items, total or 0


def conversation_detail(session: Session, user: User, conversation_id: uuid.UUID) -> ConversationDetail:
    conv = get_conversation(session, user, conversation_id)
    rows = list_messages(session, conv.id)
    attached = files_service.attachments_of(session, [m.id for m in rows if m.role == "user"])
    messages = [
        MessageRead.model_validate(m).model_copy(
            update={"attachments": [AttachmentRead.model_validate(a) for a in attached.get(m.id, [])]}
        )
        for m in rows
    ]
    return ConversationDetail.model_validate(
        {
            **ConversationRead.model_validate(conv).model_dump(),
            "system_prompt": conv.system_prompt,
            "options": conv.options,
            "messages": messages,
            "message_count": len(messages),
        }
    )


def update_conversation(
    session: Session, user: User, conversation_id: uuid.UUID, data: ConversationUpdate
) -> ConversationDetail:
    conv = get_conversation(session, user, conversation_id)
    fields = data.model_fields_set
    if "title" in fields and data.title is not None:
        conv.title = data.title
        conv.title_edited = True
    if "pinned" in fields and data.pinned is not None:
        conv.pinned = data.pinned
    if "system_prompt" in fields and data.system_prompt is not None:
        conv.system_prompt = data.system_prompt
    if "options" in fields:
        conv.options = data.options.compact() if data.options is not None else {}
    if "model" in fields and data.model is not None:
        conv.model = data.model
    session.flush()
    return conversation_detail(session, user, conv.id)


def delete_conversation(
    session: Session, user: User, conversation_id: uuid.UUID, settings: Settings | None = None
) -> None:
    """Delete a conversation and (given ``settings``) the files its messages attached that nothing else
    uses any more (another conversation, a knowledge collection): their rows now, their bytes once the
    deletion is committed."""
    conv = get_conversation(session, user, conversation_id)
    file_ids = files_service.conversation_file_ids(session, conv.id) if settings is not None else []
    # One statement for all messages (parent links cascade inside it), then the conversation.
    session.execute(
        delete(Message).where(Message.conversation_id == conv.id).execution_options(synchronize_session=False)
    )
    session.delete(conv)
    session.flush()
    if file_ids and settings is not None:
        files_service.delete_unused(settings, session, file_ids)


def set_generated_title(session: Session, conversation_id: uuid.UUID, title: str) -> bool:
    """Store an automatic title unless the user has set one meanwhile. True when it was stored."""
    statement = (
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.title_edited.is_(False))
        # An automatic title is not user activity: keep updated_at (and so the list order) as it is.
        .values(title=title, updated_at=Conversation.updated_at)
        .execution_options(synchronize_session=False)
    )
    result = cast("CursorResult[Any]", session.execute(statement))  # an UPDATE answers a cursor result
    return bool(result.rowcount)
