"""Export (lossless JSON, or Markdown of the current branch) and all-or-nothing import of conversations."""

from __future__ import annotations

import base64
import logging
import uuid
from datetime import datetime, timezone
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from server.db.base import utcnow
from server.db.models import Conversation, File, Message, MessageStatus, User
from server.errors import DomainError, InvalidInput
from server.schemas.conversation import EXPORT_FORMAT, EXPORT_VERSION, ConversationExport, ExportConversation
from server.services import files as files_service
from server.services.conversations import current_branch, get_conversation, list_messages
from server.settings import Settings

log = logging.getLogger(__name__)


# --- export ----------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None


def _attachment_names(session: Session, messages: list[Message]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """What the export says of each user message's files: name, type, size, and how the chat used it."""
    found = files_service.attachments_of(session, [m.id for m in messages if m.role == "user"])
    keep = ("name", "mime", "size", "kind", "mode")
    return {mid: [{k: a[k] for k in keep} for a in items] for mid, items in found.items()}


def _export_one(
    conv: Conversation, messages: list[Message], attached: dict[uuid.UUID, list[dict[str, Any]]] | None = None
) -> dict[str, Any]:
    attached = attached or {}
    return {
        "id": str(conv.id),
        "title": conv.title,
        "title_edited": conv.title_edited,
        "pinned": conv.pinned,
        "model": conv.model,
        "system_prompt": conv.system_prompt,
        "options": conv.options or {},
        "created_at": _iso(conv.created_at),
        "updated_at": _iso(conv.updated_at),
        "messages": [
            {
                "id": str(m.id),
                "parent_id": str(m.parent_id) if m.parent_id else None,
                "role": m.role,
                "content": m.content,
                "thinking": m.thinking,
                "status": m.status,
                "model": m.model,
                "created_at": _iso(m.created_at),
                "updated_at": _iso(m.updated_at),
                "usage": m.usage,
                "timings": m.timings,
                "error": m.error,
                **({"attachments": attached[m.id]} if m.id in attached else {}),
                **({"citations": m.citations} if m.citations else {}),
            }
            for m in messages
        ],
    }


def _envelope(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": _iso(utcnow()),
        "conversations": items,
    }


def export_conversation(session: Session, user: User, conversation_id: uuid.UUID) -> dict[str, Any]:
    conv = get_conversation(session, user, conversation_id)
    messages = list_messages(session, conv.id)
    return _envelope([_export_one(conv, messages, _attachment_names(session, messages))])


def export_all(session: Session, user: User) -> dict[str, Any]:
    convs = list(
        session.scalars(
            select(Conversation).where(Conversation.user_id == user.id).order_by(Conversation.created_at)
        )
    )
    by_conv: dict[uuid.UUID, list[Message]] = {c.id: [] for c in convs}
    if convs:
        msgs = session.scalars(
            select(Message)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Conversation.user_id == user.id)
            .order_by(Message.created_at, Message.id)
        )
        for m in msgs:
            by_conv[m.conversation_id].append(m)
    attached = _attachment_names(session, [m for ms in by_conv.values() for m in ms])
    return _envelope([_export_one(c, by_conv[c.id], attached) for c in convs])


def _markdown_files(
    session: Session,
    settings: Settings | None,
    message: Message,
    attached: dict[uuid.UUID, list[dict[str, Any]]],
) -> list[str]:
    """A user message's files in Markdown: images as small inline thumbnails, documents by name."""
    lines: list[str] = []
    for a in attached.get(message.id, []):
        label = a["name"].replace("]", ")").replace("[", "(")
        if a["kind"] == "image" and settings is not None:
            try:
                row = session.get(File, uuid.UUID(a["id"]))
                png = files_service.thumbnail_at(settings, row).read_bytes() if row is not None else b""
            except (OSError, ValueError, DomainError):
                png = b""
            if png:
                lines.append(f"![{label}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})")
                continue
        how = {"full": "whole document", "retrieval": "searched", "image": "image"}.get(a["mode"], a["mode"])
        lines.append(f"*Attached: {label} ({how})*")
    return [*lines, ""] if lines else []


def export_markdown(
    session: Session, user: User, conversation_id: uuid.UUID, settings: Settings | None = None
) -> tuple[str, str]:
    """(title, markdown) of the current branch; with ``settings``, images as inline thumbnails."""
    conv = get_conversation(session, user, conversation_id)
    messages = list_messages(session, conv.id)
    branch = current_branch(messages)
    attached = files_service.attachments_of(session, [m.id for m in branch if m.role == "user"])
    lines = [f"# {conv.title or 'Conversation'}", ""]
    meta = [f"- Created: {_iso(conv.created_at)}"]
    if conv.model:
        meta.append(f"- Model: {conv.model}")
    if len(branch) < len(messages):
        meta.append(f"- Showing the current branch ({len(branch)} of {len(messages)} messages)")
    lines += [*meta, ""]
    if conv.system_prompt:
        lines += ["## System", "", conv.system_prompt, ""]
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    for m in branch:
        heading = names.get(m.role, m.role)
        if m.role == "assistant" and m.model:
            heading += f" ({m.model})"
        lines += [f"## {heading}", ""]
        if m.thinking:
            lines += ["<details><summary>Thinking</summary>", "", m.thinking, "", "</details>", ""]
        lines += _markdown_files(session, settings, m, attached)
        lines += [m.content, ""]
        if m.citations:
            lines += [
                *(
                    f"[{c.get('number')}] {c.get('file_name')}"
                    + (f", page {c['page']}" if c.get("page") else "")
                    for c in m.citations
                ),
                "",
            ]
        if m.status in (MessageStatus.STOPPED.value, MessageStatus.ERROR.value):
            lines += [f"*({m.status})*", ""]
    return conv.title, "\n".join(lines).rstrip() + "\n"


# --- import ----------------------------------------------------------------------------------------------


def _validate_tree(conv: ExportConversation, index: int) -> list[Any]:
    """Messages of one conversation in an order where every parent precedes its children."""
    where = f"conversations[{index}]"
    ids = [m.id for m in conv.messages]
    if len(set(ids)) != len(ids):
        raise InvalidInput(f"{where}: duplicate message ids", code="invalid_import")
    by_id = {m.id: m for m in conv.messages}
    for m in conv.messages:
        if m.parent_id is not None and m.parent_id not in by_id:
            raise InvalidInput(
                f"{where}: message {m.id} has a parent that is not in this conversation",
                code="invalid_import",
            )
    ordered: list[Any] = []
    placed: set[str] = set()
    children: dict[str | None, list[Any]] = {}
    for m in conv.messages:
        children.setdefault(m.parent_id, []).append(m)
    stack = list(reversed(children.get(None, [])))
    while stack:
        m = stack.pop()
        ordered.append(m)
        placed.add(m.id)
        stack.extend(reversed(children.get(m.id, [])))
    if len(ordered) != len(conv.messages):
        raise InvalidInput(f"{where}: the messages' parent links form a cycle", code="invalid_import")
    return ordered


def import_conversations(
    session: Session, user: User, data: ConversationExport, *, max_message_chars: int
) -> tuple[dict[str, uuid.UUID], int]:
    """Insert every conversation of an export under new ids. All or nothing: any problem raises before
    the caller's transaction commits."""
    plans = []
    seen: set[str] = set()
    for i, conv in enumerate(data.conversations):
        if conv.id in seen:
            raise InvalidInput(f"conversations[{i}]: duplicate conversation id", code="invalid_import")
        seen.add(conv.id)
        ordered = _validate_tree(conv, i)
        for m in ordered:
            if len(m.content) > max_message_chars * 4 or len(m.thinking) > max_message_chars * 4:
                raise InvalidInput(f"conversations[{i}]: message {m.id} is too long", code="invalid_import")
        plans.append((conv, ordered))
    ids: dict[str, uuid.UUID] = {}
    count = 0
    now = utcnow()
    for conv, ordered in plans:
        new_conv = Conversation(
            id=uuid.uuid4(),
            user_id=user.id,
            title=conv.title,
            title_edited=conv.title_edited,
            pinned=conv.pinned,
            model=conv.model,
            system_prompt=conv.system_prompt,
            options=conv.options,
            created_at=conv.created_at,
            updated_at=conv.updated_at or conv.created_at,
        )
        session.add(new_conv)
        session.flush()
        mapping: dict[str, uuid.UUID] = {}
        rows = []
        for m in ordered:
            new_id = uuid.uuid4()
            mapping[m.id] = new_id
            status, error = m.status, m.error
            if status == MessageStatus.STREAMING.value:
                # A reply that was still streaming when exported can never finish now.
                status, error = MessageStatus.ERROR.value, {"code": "interrupted", "message": "interrupted"}
            rows.append(
                {
                    "id": new_id,
                    "conversation_id": new_conv.id,
                    "parent_id": mapping[m.parent_id] if m.parent_id else None,
                    "role": m.role,
                    "content": m.content,
                    "thinking": m.thinking,
                    "status": status,
                    "model": m.model,
                    "created_at": m.created_at,
                    "updated_at": m.updated_at or m.created_at,
                    "usage": m.usage,
                    "timings": m.timings,
                    "error": error,
                    "citations": m.citations,
                }
            )
        # One executemany per conversation; rows are in parent-first order for the FK check.
        for start in range(0, len(rows), 500):
            session.execute(cast("Table", Message.__table__).insert(), rows[start : start + 500])
        ids[conv.id] = new_conv.id
        count += len(rows)
    session.flush()
    log.info(
        "user %s imported %d conversations (%d messages) at %s", user.id, len(ids), count, now.isoformat()
    )
    return ids, count
