"""Conversations of the signed-in user: list, search, detail, update, delete, export, import."""

from __future__ import annotations

import re
import uuid
from typing import Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse, Response

from server.api.paging import PageParam
from server.deps import CurrentUser, SessionDep, SettingsDep
from server.schemas.conversation import (
    ConversationDetail,
    ConversationExport,
    ConversationImportRead,
    ConversationPage,
    ConversationUpdate,
    SearchHit,
    SearchPage,
)
from server.services import conversation_search, conversation_transfer
from server.services import conversations as conversations_service

router = APIRouter(prefix="/api/conversations", tags=["conversations"])

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def _attachment(name: str) -> dict[str, str]:
    safe = _UNSAFE_FILENAME.sub("-", name).strip("-.") or "conversation"
    return {"Content-Disposition": f'attachment; filename="{safe[:80]}"'}


@router.get("", response_model=ConversationPage, summary="Your conversations, pinned first, newest first")
def list_conversations(
    user: CurrentUser, session: SessionDep, page: PageParam = 1, size: int = Query(50, ge=1, le=200)
) -> ConversationPage:
    items, total = conversations_service.list_conversations(session, user, page, size)
    return ConversationPage(items=items, total=total, page=page, size=size)


@router.get("/search", response_model=SearchPage, summary="Full-text search over titles and messages")
def search_conversations(
    user: CurrentUser,
    session: SessionDep,
    q: str = Query(..., min_length=1, max_length=500),
    page: PageParam = 1,
    size: int = Query(20, ge=1, le=100),
) -> SearchPage:
    hits, total = conversation_search.search_conversations(session, user, q, page, size)
    return SearchPage(items=[SearchHit.model_validate(h) for h in hits], total=total, page=page, size=size)


@router.get("/export", summary="Export all your conversations (JSON, lossless)")
def export_all(user: CurrentUser, session: SessionDep) -> JSONResponse:
    data = conversation_transfer.export_all(session, user)
    return JSONResponse(data, headers=_attachment("modeltrain-conversations.json"))


@router.post(
    "/import",
    response_model=ConversationImportRead,
    status_code=status.HTTP_201_CREATED,
    summary="Import conversations from a JSON export (all or nothing)",
)
def import_conversations(
    body: ConversationExport, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> ConversationImportRead:
    ids, count = conversation_transfer.import_conversations(
        session, user, body, max_message_chars=settings.chat_max_message_chars
    )
    return ConversationImportRead(imported=len(ids), messages=count, ids=ids)


@router.get(
    "/{conversation_id}", response_model=ConversationDetail, summary="A conversation with every branch"
)
def get_conversation(
    conversation_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> ConversationDetail:
    return conversations_service.conversation_detail(session, user, conversation_id)


@router.patch("/{conversation_id}", response_model=ConversationDetail, summary="Rename, pin, change settings")
def update_conversation(
    conversation_id: uuid.UUID, body: ConversationUpdate, user: CurrentUser, session: SessionDep
) -> ConversationDetail:
    return conversations_service.update_conversation(session, user, conversation_id, body)


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a conversation")
def delete_conversation(
    conversation_id: uuid.UUID, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> None:
    conversations_service.delete_conversation(session, user, conversation_id, settings)


@router.get(
    "/{conversation_id}/export",
    summary="Export one conversation as JSON or Markdown",
    responses={
        200: {
            "description": "The conversation as an attachment: JSON, or Markdown with format=markdown",
            "content": {"text/markdown": {"schema": {"type": "string"}}},
        }
    },
)
def export_conversation(
    conversation_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    format: Literal["json", "markdown"] = Query("json"),
) -> Response:
    if format == "markdown":
        _title, text = conversation_transfer.export_markdown(session, user, conversation_id, settings)
        return Response(
            text,
            media_type="text/markdown; charset=utf-8",
            headers=_attachment(f"conversation-{conversation_id}.md"),
        )
    data = conversation_transfer.export_conversation(session, user, conversation_id)
    return JSONResponse(data, headers=_attachment(f"conversation-{conversation_id}.json"))
