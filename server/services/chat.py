"""Chat streaming, as a few small steps:

1. ``prepare_*``      (thread) check ownership, resolve the model, commit the user message and an empty
                      assistant message in status ``streaming`` -- all before any upstream call;
2. ``ChatStream.run`` (event loop) stream from the provider, keep the growing reply in memory;
3. ``ChatStream.events``  forward deltas, coalesced (~30 ms) so fast models do not flood the browser;
4. ``_persist_*``     (thread) write the reply in batches (every 0.5 s or 2 KB, never per token) and
                      finish it as complete / stopped / error.

Active streams live in a :class:`StreamRegistry` (``runtime.streams``): the stop
endpoint, the per-user cap, metrics and shutdown use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast

import anyio
from anyio import to_thread
from sqlalchemy import Connection, CursorResult, Table, select, update
from sqlalchemy.orm import Session

from server import aio
from server.db.base import Base, utcnow
from server.db.models import Conversation, File, Message, MessageFile, MessageStatus, RefreshToken, User
from server.db.session import session_scope
from server.errors import DomainError, InvalidInput, NotFound, UpstreamError
from server.providers.base import ChatMessage, ChatProvider, ChatRequest, Delta, Done, ProviderError, Timeouts
from server.providers.model_names import display_model_name
from server.providers.openai_compat import OpenAICompatProvider
from server.runtime import Runtime
from server.schemas.message import ChatCreate, ChatRegenerate
from server.services import cluster, gateway
from server.services import conversations as conversations_service
from server.services import files as files_service
from server.services import limits as limits_service
from server.services import models as models_service
from server.services import usage as usage_service
from server.services.models import ResolvedModel
from server.services.reply_owner import Incarnation
from server.stream_events import KEEPALIVE, ServerSentEvent

log = logging.getLogger(__name__)

#: While a reply streams, its row is touched at least this often (even during a long model load)...
HEARTBEAT_SECONDS = 10.0
#: ...so a ``streaming`` row untouched for this long has no live owner in any instance sharing the
#: database: it was interrupted by a crash (docs/security.md, E5) and is marked as an error.
ORPHAN_AFTER_SECONDS = 45.0
#: A stream parsing buffered upstream lines gives the event loop back at least this often (seconds).
YIELD_EVERY = 0.002
#: The pipeline's own first-token/idle watchdog fires this much after the adapter's, as a safety net.
WATCHDOG_GRACE = 1.0
TITLE_MAX_CHARS = 80
#: A stream waits for its title this much longer than ``chat_title_timeout`` (the time allowed to the
#: model), for the title's write.
TITLE_SAVE_GRACE = 5.0
TITLE_PROMPT = (
    "Write a short title (at most six words) for the conversation below, in the same language as the "
    "user's message. Answer with the title only: no quotes, no punctuation at the end, no explanation."
)


# --- registry -------------------------------------------------------------------------------------------


class StreamRegistry:
    """The streams of this process. Other instances reach them through ``services.cluster``, which stops
    them here by id (:meth:`ids`, :meth:`stop`)."""

    def __init__(self) -> None:
        self._streams: dict[uuid.UUID, ChatStream] = {}
        self.background: set[asyncio.Task] = set()
        self._write_limiter: anyio.CapacityLimiter | None = None
        self.heartbeat: asyncio.Task | None = None
        #: This process's incarnation (services/reply_owner.py), named by every reply it streams; set by
        #: :func:`startup`.
        self.incarnation: Incarnation | None = None

    def owner(self) -> dict[str, str | None]:
        """The owner columns of a new reply: none when the incarnation holds no lock file."""
        inc = self.incarnation
        if inc is None or not inc.claimed:
            return {"instance_id": None, "incarnation_id": None}
        return {"instance_id": inc.instance_id, "incarnation_id": inc.id}

    @property
    def count(self) -> int:
        return len(self._streams)

    def add(self, stream: ChatStream) -> None:
        self._streams[stream.plan.assistant_message_id] = stream

    def remove(self, stream: ChatStream) -> None:
        self._streams.pop(stream.plan.assistant_message_id, None)

    def limiter(self, runtime: Runtime) -> anyio.CapacityLimiter:
        """Threads writing chat data. SQLite has one writer at a time anyway; queueing writers here is
        fair and prompt, whereas many threads contending for the lock fall into SQLite's busy handler,
        which sleeps with growing back-off (up to 100 ms per retry) even once the lock is free."""
        if self._write_limiter is None:
            self._write_limiter = anyio.CapacityLimiter(1 if runtime.settings.is_sqlite else 8)
        return self._write_limiter

    def get(self, message_id: uuid.UUID) -> ChatStream | None:
        return self._streams.get(message_id)

    def all(self) -> list[ChatStream]:
        return list(self._streams.values())

    def ids(self) -> list[uuid.UUID]:
        """The assistant message ids of the replies streaming here."""
        return list(self._streams)

    def stop(self, message_id: uuid.UUID) -> None:
        """Ask the reply streaming into ``message_id`` to stop (nothing if it already ended)."""
        stream = self._streams.get(message_id)
        if stream is not None:
            stream.request_stop("stop")

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task


def registry(runtime: Runtime) -> StreamRegistry:
    """This process's stream registry (``create_app`` makes it; a bare runtime in tests gets one here)."""
    if runtime.streams is None:
        runtime.streams = StreamRegistry()
    return runtime.streams


# --- step 1: persist the prompt -------------------------------------------------------------------------


@dataclass
class ChatPlan:
    user_id: uuid.UUID
    conversation_id: uuid.UUID
    user_message_id: uuid.UUID
    assistant_message_id: uuid.UUID
    assistant_created_at: Any
    model_id: str
    adapter: ChatProvider
    request: ChatRequest
    #: The first exchange of a conversation whose title the user has not set: generate a title after it.
    wants_title: bool = False
    first_user_text: str = ""
    #: For the usage record: the provider answering and the client's address (set by the route).
    provider_id: uuid.UUID | None = None
    client_ip: str | None = None
    #: The model as ``/v1`` names it (services/gateway.py), for the usage record.
    usage_model: str = ""
    #: What the limits admitted (a stream slot, tokens reserved): settled with the final write.
    admission: limits_service.Admission | None = None
    #: The prompt's files as the read model shows them, and the reply's numbered sources (meta event).
    attachments: list[dict[str, Any]] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)
    #: The sign-in the reply streams for: revoking it (sign-out, password change, a disabled, deleted or
    #: demoted account) stops the reply at its next save (docs/security.md, B4).
    holder: SessionHolder | None = None


@dataclass(frozen=True)
class SessionHolder:
    """Whose sign-in a reply streams for: the user, their token version when it started, and the session
    (refresh token family) of the access token, when it names one."""

    user_id: uuid.UUID
    token_version: int
    family: uuid.UUID | None = None

    @classmethod
    def of(cls, user: User, session_id: str | None) -> SessionHolder:
        try:
            family = uuid.UUID(session_id) if session_id else None
        except ValueError:  # a desktop session's id is not a family
            family = None
        return cls(user.id, user.token_version, family)


def _resolve(session: Session, runtime: Runtime, model_id: str, user_id: uuid.UUID) -> ResolvedModel:
    return models_service.resolve_model(session, runtime, model_id, user_id=user_id)


def _usage_model(session: Session, user_id: uuid.UUID, resolved: ResolvedModel) -> str:
    return gateway.v1_model_id(session, user_id, resolved)


def _ancestors(messages: list[Message], leaf_id: uuid.UUID | None) -> list[Message]:
    by_id = {m.id: m for m in messages}
    path: list[Message] = []
    seen: set[uuid.UUID] = set()
    node = by_id.get(leaf_id) if leaf_id else None
    while node is not None and node.id not in seen:
        seen.add(node.id)
        path.append(node)
        node = by_id.get(node.parent_id) if node.parent_id else None
    return list(reversed(path))


def _history(path: list[Message], turns: dict[uuid.UUID, UserTurn] | None = None) -> list[ChatMessage]:
    """The path as the model reads it; ``turns``: what the user messages' attachments add to them."""
    out: list[ChatMessage] = []
    for m in path:
        if m.role == "assistant" and not m.content:
            continue  # an empty failed/stopped reply says nothing to the model
        turn = (turns or {}).get(m.id)
        if m.role == "user" and turn is not None:
            out.append(turn.message(m.content))
        elif m.role in ("user", "assistant", "system"):
            out.append(ChatMessage(role=m.role, content=m.content))  # type: ignore[arg-type]
    return out


# --- attachments, documents and retrieved passages (docs/attachments.md) --------------------------------

#: The context length assumed when neither the request, the conversation nor the model's preset sets one.
DEFAULT_CONTEXT_TOKENS = 8192
SOURCES_INTRO = (
    "Answer using the numbered sources below when they are relevant, and cite them as [n] "
    "(for example [1]). If they do not hold the answer, say so."
)


@dataclass
class UserTurn:
    """What a user message's attachments add to it for the model: images (data URLs), whole documents,
    and (on the prompt being answered) the numbered passages retrieved for it."""

    images: list[str] = field(default_factory=list)
    documents: list[tuple[str, str]] = field(default_factory=list)  # (name, text)
    sources: list[Any] = field(default_factory=list)  # retrieval.Passage

    def message(self, content: str) -> ChatMessage:
        parts: list[str] = []
        for name, text in self.documents:
            parts.append(f'<document name="{name}">\n{text}\n</document>')
        if self.sources:
            lines = [SOURCES_INTRO]
            for p in self.sources:
                where = f"{p.file_name}, page {p.page}" if p.page else p.file_name
                lines.append(f"[{p.number}] ({where})\n{p.text}")
            parts.append("<sources>\n" + "\n\n".join(lines) + "\n</sources>")
        text = "\n\n".join([*parts, content]) if parts else content
        return ChatMessage(role="user", content=text, images=tuple(self.images))


@dataclass
class Attached:
    """The files and collections of one prompt, worked out before anything is saved."""

    #: The files sent with this request (new attachments of the prompt), in order, and their modes.
    files: list[File] = field(default_factory=list)
    modes: dict[uuid.UUID, str] = field(default_factory=dict)
    #: Earlier long documents of the conversation (retrieval mode), searched again for this prompt.
    earlier_retrieval: list[uuid.UUID] = field(default_factory=list)
    #: The conversation's collections for this prompt, and the value to store (None: unchanged).
    collections: list[uuid.UUID] = field(default_factory=list)
    store_knowledge: list[uuid.UUID] | None = None
    passages: list[Any] = field(default_factory=list)
    has_images: bool = False
    resolved: ResolvedModel | None = None
    #: The prompt's text (the retrieval query).
    query: str = ""

    @property
    def retrieval_files(self) -> list[uuid.UUID]:
        new = [f.id for f in self.files if self.modes.get(f.id) == "retrieval"]
        return list(dict.fromkeys([*self.earlier_retrieval, *new]))

    def citations(self) -> list[dict[str, Any]]:
        return [
            {
                "number": p.number,
                "file_id": str(p.file_id),
                "file_name": p.file_name,
                "collection_id": str(p.collection_id) if p.collection_id else None,
                "chunk_id": p.chunk_id,
                "page": p.page,
                "text": p.text,
            }
            for p in self.passages
        ]


def _context_tokens(resolved: Any, conv: Conversation | None, options: dict[str, Any]) -> int:
    defaults = (getattr(resolved, "defaults", None) or {}).get("options") or {}
    for layer in (options, (conv.options if conv else None) or {}, defaults):
        value = layer.get("context_length")
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT_TOKENS


def gather_attachments(
    session: Session,
    runtime: Runtime,
    user: User,
    *,
    model_id: str,
    file_ids: list[uuid.UUID],
    conv: Conversation | None,
    knowledge: list[uuid.UUID] | None,
    options: dict[str, Any],
) -> Attached:
    """Check the files are the user's (404 ``file_not_found``), resolve the model, and decide each
    document's mode: whole while the documents fit in ``chat_document_context_share`` of the model's
    context, else retrieval. Blocking: run it in a worker thread."""
    attached = Attached(files=files_service.get_many_owned(session, user, file_ids))
    if conv is not None:
        attached.earlier_retrieval = list(
            dict.fromkeys(
                session.scalars(
                    select(MessageFile.file_id)
                    .join(Message, Message.id == MessageFile.message_id)
                    .where(Message.conversation_id == conv.id, MessageFile.mode == "retrieval")
                )
            )
        )
    if knowledge is not None:
        attached.store_knowledge = list(dict.fromkeys(knowledge))
        attached.collections = attached.store_knowledge
    elif conv is not None and conv.knowledge:
        stored = [uuid.UUID(str(c)) for c in conv.knowledge]
        attached.collections = _usable_collections(session, user, stored)
        if attached.collections != stored:  # deleted or no longer shared: dropped from the conversation
            attached.store_knowledge = attached.collections
    if not attached.files and not attached.earlier_retrieval and not attached.collections:
        return attached  # nothing to add: the prompt step resolves the model as usual
    attached.resolved = _resolve(session, runtime, model_id, user.id)
    budget = runtime.settings.chat_document_context_share * _context_tokens(attached.resolved, conv, options)
    used = 0
    for f in attached.files:
        if f.kind == "image":
            attached.modes[f.id] = "image"
            attached.has_images = True
            continue
        tokens = f.tokens or 0
        if used + tokens <= budget:
            attached.modes[f.id] = "full"
            used += tokens
        else:
            attached.modes[f.id] = "retrieval"
    for f in attached.files:
        session.expunge(f)  # read again on the event loop and in the prompt's thread
    return attached


def _usable_collections(session: Session, user: User, ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """The conversation's collections the user may still read (a request naming one it may not is 404,
    in the retrieval)."""
    from server.services.knowledge import collections as knowledge_collections

    usable = []
    for collection_id in ids:
        try:
            knowledge_collections.readable(session, user, collection_id)
        except NotFound:
            continue
        usable.append(collection_id)
    return usable


async def _check_vision(runtime: Runtime, resolved: Any) -> None:
    """400 ``model_not_vision`` for an Ollama model that does not list the vision capability. An
    OpenAI-compatible server does not say: its model is trusted to take images (the upstream refuses)."""
    adapter = resolved.adapter
    list_models = getattr(adapter, "list_models", None)
    if isinstance(adapter, OpenAICompatProvider) or list_models is None:
        return
    try:
        infos = await list_models(timeout=runtime.settings.models_discovery_timeout)
    except ProviderError:
        return  # the chat itself reports the upstream's state
    wanted = display_model_name(resolved.upstream_model).lower()
    for info in infos:
        if display_model_name(info.name).lower() == wanted:
            if "vision" not in info.capabilities:
                raise DomainError(
                    f"{info.name} cannot see images: choose a model with the vision capability "
                    "(e.g. llava, qwen2.5vl, gemma3) or remove the images",
                    code="model_not_vision",
                )
            return


async def _retrieve(runtime: Runtime, session: Session, user: User, attached: Attached, query: str) -> None:
    """The numbered passages of the long documents and collections (services/knowledge/retrieval.py)."""
    files, collections = attached.retrieval_files, attached.collections
    if not files and not collections:
        return
    from server.services.knowledge import retrieval

    try:
        attached.passages = await retrieval.passages_for_chat(
            runtime,
            session,
            user,
            query=query,
            file_ids=files,
            collection_ids=collections,
            limit=runtime.settings.chat_document_passages,
        )
    except ProviderError as exc:
        raise UpstreamError(f"the embedding model failed: {exc.message}", code=exc.code) from None


def _turns(runtime: Runtime, session: Session, path: list[Message]) -> dict[uuid.UUID, UserTurn]:
    """The attachments of the user messages on ``path`` (images and whole documents go with them on
    every later turn; a long document's passages are retrieved for the newest prompt only)."""
    ids = [m.id for m in path if m.role == "user"]
    if not ids:
        return {}
    rows = session.execute(
        select(MessageFile.message_id, MessageFile.mode, File)
        .join(File, File.id == MessageFile.file_id)
        .where(MessageFile.message_id.in_(ids))
        .order_by(MessageFile.message_id, MessageFile.position)
    ).all()
    turns: dict[uuid.UUID, UserTurn] = {}
    for message_id, mode, f in rows:
        turn = turns.setdefault(message_id, UserTurn())
        try:
            if mode == "image":
                turn.images.append(files_service.image_data_url(runtime, f))
            elif mode == "full":
                turn.documents.append((f.name, files_service.read_text(runtime, f)))
        except (OSError, DomainError):
            log.warning("attachment %s of message %s is unreadable; sent without it", f.id, message_id)
    return turns


def _link_files(session: Session, message_id: uuid.UUID, attached: Attached) -> None:
    existing = {
        row.file_id: row
        for row in session.scalars(select(MessageFile).where(MessageFile.message_id == message_id))
    }
    position = max((row.position for row in existing.values()), default=-1) + 1
    for f in attached.files:
        if f.id in existing:
            continue
        session.add(
            MessageFile(message_id=message_id, file_id=f.id, position=position, mode=attached.modes[f.id])
        )
        position += 1
    session.flush()


def _merged_options(defaults: dict[str, Any], conv: Conversation, request: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in ((defaults or {}).get("options") or {}, conv.options or {}, request):
        merged.update({k: v for k, v in layer.items() if v is not None})
    return merged


def _build_request(
    resolved: Any, conv: Conversation, history: list[ChatMessage], options: dict[str, Any]
) -> ChatRequest:
    defaults = getattr(resolved, "defaults", None) or {}
    system = conv.system_prompt or defaults.get("system_prompt") or ""
    messages = ([ChatMessage(role="system", content=system)] if system else []) + history
    merged = _merged_options(defaults, conv, options)
    think = merged.pop("think", None)
    return ChatRequest(model=resolved.upstream_model, messages=messages, options=merged, think=think)


def _new_assistant(
    runtime: Runtime,
    conv: Conversation,
    parent_id: uuid.UUID,
    model_id: str,
    citations: list[dict[str, Any]] | None = None,
) -> Message:
    return Message(
        **registry(runtime).owner(),
        citations=citations or None,
        id=uuid.uuid4(),
        conversation_id=conv.id,
        parent_id=parent_id,
        role="assistant",
        content="",
        thinking="",
        status=MessageStatus.STREAMING.value,
        model=model_id,
    )


def prepare_chat(
    session: Session, runtime: Runtime, user: User, body: ChatCreate, attached: Attached | None = None
) -> ChatPlan:
    """Check everything, then add the user message and the empty assistant reply (caller commits).
    ``attached``: what :func:`gather_attachments` and the retrieval worked out for the files and
    collections of the request."""
    attached = attached or Attached()
    _check_message(runtime.settings, body.content)
    conv: Conversation | None = None
    parent: Message | None = None
    explicit_parent = "parent_id" in body.model_fields_set
    if body.conversation_id is not None:
        conv = conversations_service.get_conversation(session, user, body.conversation_id)
    if explicit_parent and body.parent_id is not None:
        parent, parent_conv = conversations_service.get_message(session, user, body.parent_id)
        if conv is None:
            conv = parent_conv
        elif parent_conv.id != conv.id:
            raise NotFound("message not found", code="message_not_found")
    resolved = attached.resolved or _resolve(session, runtime, body.model, user.id)
    now = utcnow()
    is_new = conv is None
    if conv is None:
        conv = Conversation(
            id=uuid.uuid4(),
            user_id=user.id,
            title=conversations_service.fallback_title(body.content),
            model=body.model,
            options={},
        )
        session.add(conv)
        existing: list[Message] = []
    else:
        existing = conversations_service.list_messages(session, conv.id)
    if not explicit_parent and existing:
        parent = conversations_service.current_branch(existing)[-1]
    path = _ancestors(existing, parent.id if parent else None)
    options = body.options.compact() if body.options else {}
    prompt = UserTurn(sources=attached.passages)
    for f in attached.files:
        if attached.modes[f.id] == "image":
            prompt.images.append(files_service.image_data_url(runtime, f))
        elif attached.modes[f.id] == "full":
            prompt.documents.append((f.name, files_service.read_text(runtime, f)))
    history = [*_history(path, _turns(runtime, session, path)), prompt.message(body.content)]
    request = _build_request(resolved, conv, history, options)

    user_msg = Message(
        id=uuid.uuid4(),
        conversation_id=conv.id,
        parent_id=parent.id if parent else None,
        role="user",
        content=body.content,
        status=MessageStatus.COMPLETE.value,
        created_at=now,
        updated_at=now,
    )
    session.add(user_msg)
    citations = attached.citations()
    reply = _new_assistant(runtime, conv, user_msg.id, body.model, citations)
    session.add(reply)
    session.flush()
    _link_files(session, user_msg.id, attached)
    if attached.store_knowledge is not None:
        conv.knowledge = [str(c) for c in attached.store_knowledge] or None
    if not conv.title:
        conv.title = conversations_service.fallback_title(body.content)
    conv.model = body.model
    conv.updated_at = now
    session.flush()
    return ChatPlan(
        user_id=user.id,
        conversation_id=conv.id,
        user_message_id=user_msg.id,
        assistant_message_id=reply.id,
        assistant_created_at=reply.created_at,
        model_id=body.model,
        adapter=resolved.adapter,
        request=request,
        wants_title=(is_new or not existing) and not conv.title_edited,
        first_user_text=body.content,
        provider_id=getattr(resolved.provider, "id", None),
        usage_model=_usage_model(session, user.id, resolved),
        attachments=files_service.attachments_of(session, [user_msg.id]).get(user_msg.id, []),
        citations=citations,
    )


def prepare_regenerate(
    session: Session,
    runtime: Runtime,
    user: User,
    message_id: uuid.UUID,
    body: ChatRegenerate,
    attached: Attached | None = None,
) -> ChatPlan:
    """A new assistant reply as a sibling of ``message_id`` (or as a reply to it, if it is a user message).
    The prompt keeps its attachments; ``attached`` adds the request's files to it, and its passages."""
    attached = attached or Attached()
    target, conv = conversations_service.get_message(session, user, message_id)
    if target.role == "assistant":
        if target.parent_id is None:
            raise InvalidInput("this reply has no prompt to answer", code="nothing_to_regenerate")
        prompt_id = target.parent_id
    elif target.role == "user":
        prompt_id = target.id
    else:
        raise InvalidInput("a system message cannot be regenerated", code="nothing_to_regenerate")
    model_id = body.model or (target.model if target.role == "assistant" else "") or conv.model
    if not model_id:
        raise InvalidInput("no model given and none recorded for this conversation", code="model_required")
    resolved = attached.resolved or _resolve(session, runtime, model_id, user.id)
    _link_files(session, prompt_id, attached)
    if attached.store_knowledge is not None:
        conv.knowledge = [str(c) for c in attached.store_knowledge] or None
    existing = conversations_service.list_messages(session, conv.id)
    path = _ancestors(existing, prompt_id)
    options = body.options.compact() if body.options else {}
    turns = _turns(runtime, session, path)
    if attached.passages:
        turns.setdefault(prompt_id, UserTurn()).sources = attached.passages
    request = _build_request(resolved, conv, _history(path, turns), options)
    citations = attached.citations()
    reply = _new_assistant(runtime, conv, prompt_id, model_id, citations)
    session.add(reply)
    conv.updated_at = utcnow()
    conv.model = model_id
    session.flush()
    return ChatPlan(
        user_id=user.id,
        conversation_id=conv.id,
        user_message_id=prompt_id,
        assistant_message_id=reply.id,
        assistant_created_at=reply.created_at,
        model_id=model_id,
        adapter=resolved.adapter,
        request=request,
        provider_id=getattr(resolved.provider, "id", None),
        usage_model=_usage_model(session, user.id, resolved),
        attachments=files_service.attachments_of(session, [prompt_id]).get(prompt_id, []),
        citations=citations,
    )


# --- step 4: persist the reply (runs in a worker thread) ------------------------------------------------


def _table(model: type[Base]) -> Table:
    """The Core table of a mapped class: the hot writes below skip the ORM unit of work."""
    return cast(Table, model.__table__)


def _persist_partial(
    runtime: Runtime, message_id: uuid.UUID, content: str, thinking: str, holder: SessionHolder | None = None
) -> bool:
    """Save a growing reply; in the same transaction, whether its sign-in still holds (False: revoked)."""
    messages = _table(Message)
    with runtime.engine.begin() as conn:
        conn.execute(
            update(messages)
            .where(messages.c.id == message_id)
            .values(content=content, thinking=thinking, updated_at=utcnow())
        )
        return holder is None or _sign_in_holds(conn, holder)


def _sign_in_holds(conn: Connection, holder: SessionHolder) -> bool:
    users, tokens = _table(User), _table(RefreshToken)
    row = conn.execute(
        select(users.c.token_version, users.c.is_active).where(users.c.id == holder.user_id)
    ).first()
    if row is None or not row.is_active or row.token_version != holder.token_version:
        return False
    if holder.family is None:
        return True
    live = conn.execute(
        select(tokens.c.id).where(tokens.c.family_id == holder.family, tokens.c.revoked_at.is_(None)).limit(1)
    ).first()
    return live is not None


def _persist_final(
    runtime: Runtime, plan: ChatPlan, values: dict[str, Any], tokens: int = 0
) -> dict[str, Any]:
    """The final state of the reply, in one short transaction with the settlement of its limits
    (``tokens``: the real count); returns the message as the API shows it (built from what was written,
    not read back), or ``{}`` if it was deleted meanwhile."""
    now = utcnow()
    messages, conversations = _table(Message), _table(Conversation)
    with runtime.engine.begin() as conn:
        if plan.admission is not None:
            limits_service.settle(conn, plan.admission, tokens)
        written = conn.execute(
            update(messages)
            .where(messages.c.id == plan.assistant_message_id)
            .values(**values, updated_at=now)
        ).rowcount
        conn.execute(
            update(conversations).where(conversations.c.id == plan.conversation_id).values(updated_at=now)
        )
    if not written:
        return {}
    from server.schemas.message import MessageRead

    return MessageRead(
        id=plan.assistant_message_id,
        parent_id=plan.user_message_id,
        role="assistant",
        model=plan.model_id,
        created_at=plan.assistant_created_at,
        updated_at=now,
        citations=plan.citations or None,
        **values,
    ).model_dump(mode="json")


def message_dict(m: Message) -> dict[str, Any]:
    from server.schemas.message import MessageRead

    return MessageRead.model_validate(m).model_dump(mode="json")


#: The error of a reply whose process stopped while it streamed (kept with its partial text).
INTERRUPTED = {"code": "interrupted", "message": "the server stopped while this reply was streaming"}


def recover_interrupted(
    runtime: Runtime, *, live: Iterable[uuid.UUID] = (), now: datetime | None = None
) -> int:
    """Mark replies left ``streaming`` by a crash as errors (docs/security.md, E5), keeping their text.

    Only rows untouched for ORPHAN_AFTER_SECONDS count: live streams (of this or any other instance
    sharing the database) are touched every HEARTBEAT_SECONDS, so they are never mistaken for orphans.
    Returns how many were marked.
    """
    now = now or utcnow()
    live = list(live)
    conditions = [
        Message.status == MessageStatus.STREAMING.value,
        Message.updated_at < now - timedelta(seconds=ORPHAN_AFTER_SECONDS),
    ]
    if live:
        conditions.append(Message.id.not_in(live))
    with session_scope(runtime.session_factory) as session:
        result: CursorResult[Any] = session.execute(  # type: ignore[assignment]  # an UPDATE's result
            update(Message)
            .where(*conditions)
            .values(
                status=MessageStatus.ERROR.value,
                error=INTERRUPTED,
            )
            .execution_options(synchronize_session=False)
        )
        count = result.rowcount or 0
    if count:
        log.warning("marked %d interrupted replies as errors", count)
    return count


def recover_own(runtime: Runtime) -> int:
    """Mark interrupted, at once, the replies a previous incarnation of this instance left ``streaming``
    (its process is gone: its lock file is free). Replies of live processes, of other hosts or data
    directories, and of no known owner are left to the staleness rule. Returns how many were marked."""
    inc = registry(runtime).incarnation
    if inc is None or not inc.claimed:
        return 0
    mine = (Message.instance_id == inc.instance_id, Message.status == MessageStatus.STREAMING.value)
    with session_scope(runtime.session_factory) as session:
        found = session.scalars(
            select(Message.incarnation_id).where(*mine, Message.incarnation_id != inc.id).distinct()
        )
        dead = [i for i in found if i and not inc.is_alive(i)]
        count = 0
        if dead:
            result: CursorResult[Any] = session.execute(  # type: ignore[assignment]  # an UPDATE's result
                update(Message)
                .where(*mine, Message.incarnation_id.in_(dead))
                .values(status=MessageStatus.ERROR.value, error=INTERRUPTED)
                .execution_options(synchronize_session=False)
            )
            count = result.rowcount or 0
    inc.sweep()
    if count:
        log.warning("marked %d replies of this instance's previous run as interrupted", count)
    return count


def _touch_streaming(runtime: Runtime, ids: list[uuid.UUID]) -> None:
    with session_scope(runtime.session_factory) as session:
        session.execute(
            update(Message)
            .where(Message.id.in_(ids), Message.status == MessageStatus.STREAMING.value)
            .values(updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )


async def _heartbeat(runtime: Runtime) -> None:
    """Touch this instance's streaming rows, then sweep orphans left by crashed instances."""
    reg = registry(runtime)
    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        ids = reg.ids()
        try:
            if ids:
                await to_thread.run_sync(_touch_streaming, runtime, ids, limiter=reg.limiter(runtime))
            await to_thread.run_sync(
                partial(recover_interrupted, runtime, live=ids), limiter=reg.limiter(runtime)
            )
        except Exception:  # a busy or briefly unreachable database: try again next beat
            log.warning("chat heartbeat failed", exc_info=True)


#: The error a reply ends with when its final write finds the disk full: the reply is not kept beyond
#: its last saved batch (the row, left ``streaming``, is swept as interrupted once there is room).
DISK_FULL = {
    "code": "disk_full",
    "message": "the server's disk is full: this reply could not be saved; free some space and try again",
}


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's ``SQLITE_FULL``, PostgreSQL's or the OS's ENOSPC/EDQUOT, wrapped or not."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(seen).lower()
        if "database or disk is full" in text or "no space left on device" in text:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


# --- steps 2 and 3: stream and forward ------------------------------------------------------------------


@dataclass
class _Outcome:
    status: str = MessageStatus.STREAMING.value
    error: dict[str, Any] | None = None
    provider_error: ProviderError | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    message: dict[str, Any] = field(default_factory=dict)
    #: A routed model (several hosts): the host that served the reply (providers/routed.py).
    served_by: dict[str, str] | None = None


class ChatStream:
    """One reply being generated. ``run`` is its producer task; ``events`` is what the SSE response sends."""

    def __init__(self, runtime: Runtime, plan: ChatPlan) -> None:
        self.runtime = runtime
        self.plan = plan
        s = runtime.settings
        self.timeouts = Timeouts(
            connect=s.chat_connect_timeout, first_token=s.chat_first_token_timeout, idle=s.chat_idle_timeout
        )
        self.coalesce = s.chat_coalesce_ms / 1000.0
        self.persist_interval = s.chat_persist_interval
        self.persist_bytes = s.chat_persist_bytes
        self.content: list[str] = []
        self.thinking: list[str] = []
        self._pending_content: list[str] = []
        self._pending_thinking: list[str] = []
        self._unsaved_bytes = 0
        # The first batch is written one interval after the start, not at the first token, so the
        # write does not compete with sending that token.
        self._last_persist = time.monotonic()
        self._flush_task: asyncio.Task | None = None
        self.changed = asyncio.Event()
        self.started = asyncio.Event()  # first delta, or the end
        self.finished = asyncio.Event()
        self.outcome = _Outcome()
        self.stop_reason: str | None = None
        self.task: asyncio.Task | None = None
        #: Generating the conversation's title after the first complete reply; its result (the title
        #: stored, or None) is sent as a ``title`` event after ``done``.
        self.title_task: asyncio.Task[str | None] | None = None
        self.db_writes = 0

    # -- control

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    def request_stop(self, reason: str = "stop") -> None:
        """Stop generating (idempotent, synchronous: usable from a disconnect callback)."""
        if self.finished.is_set() or self.stop_reason is not None:
            return
        self.stop_reason = reason
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def wait_started(self, timeout: float) -> None:
        if timeout <= 0 or self.started.is_set():
            return
        try:
            async with aio.timeout(timeout):
                await self.started.wait()
        except aio.TIMEOUT_ERRORS:
            pass

    # -- producer

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        first_token_at: float | None = None
        last_yield = begin
        outcome = self.outcome
        try:
            try:
                idle_limit = self.timeouts.idle + WATCHDOG_GRACE
                watchdog_at = loop.time() + self.timeouts.first_token + WATCHDOG_GRACE
                async with aio.timeout_at(watchdog_at) as watchdog:
                    async with aclosing(
                        self.plan.adapter.stream_chat(self.plan.request, self.timeouts)
                    ) as events:
                        async for event in events:
                            now = loop.time()
                            if watchdog_at - now < idle_limit:
                                # A safety net behind the adapter's own exact timeouts: moved at most
                                # about once per idle period, so it fires between one and two idle
                                # periods after the last event, never before the adapter's timeout.
                                watchdog_at = now + 2 * idle_limit
                                aio.reschedule(watchdog, watchdog_at)
                            if isinstance(event, Delta):
                                self._append(event)
                                if first_token_at is None or now - last_yield > YIELD_EVERY:
                                    # Reading lines already buffered never waits, so a fast upstream
                                    # would keep the loop until its answer ends: let the SSE writer
                                    # (first token at once) and the other streams run.
                                    first_token_at = first_token_at or now
                                    await asyncio.sleep(0)
                                    last_yield = loop.time()
                            elif isinstance(event, Done):
                                outcome.usage = dict(event.usage or {})
                                outcome.timings = dict(event.timings or {})
                                outcome.served_by = event.served_by
                                outcome.status = MessageStatus.COMPLETE.value
                                break
                if outcome.status != MessageStatus.COMPLETE.value:
                    raise ProviderError("upstream_protocol", "the model's answer ended without a final chunk")
            except aio.TIMEOUT_ERRORS:
                which = "first_token" if first_token_at is None else "idle"
                limit = self.timeouts.first_token if which == "first_token" else self.timeouts.idle
                raise ProviderError(
                    "upstream_timeout",
                    f"the model sent nothing for {limit:g} s ({which} timeout)",
                    status=504,
                ) from None
        except asyncio.CancelledError:
            # Stop, client disconnect or shutdown: keep the partial answer. The cancellation is consumed
            # here so the final write below can still run.
            aio.uncancel(asyncio.current_task())
            outcome.status = MessageStatus.STOPPED.value
            if self.stop_reason is None:
                self.stop_reason = "cancelled"
        except ProviderError as exc:
            outcome.status = MessageStatus.ERROR.value
            outcome.provider_error = exc
            outcome.error = {"code": exc.code, "message": exc.message}
        except Exception:  # a bug in an adapter must not leave the reply "streaming"
            log.exception("chat stream failed")
            outcome.status = MessageStatus.ERROR.value
            outcome.error = {"code": "internal_error", "message": "the reply failed; see the server log"}
        end = loop.time()
        if first_token_at is not None:
            outcome.timings["first_token_ms"] = round((first_token_at - begin) * 1000, 1)
        outcome.timings["total_ms"] = round((end - begin) * 1000, 1)
        await self._finish()

    def _append(self, event: Delta) -> None:
        if event.content:
            self.content.append(event.content)
            self._pending_content.append(event.content)
            self._unsaved_bytes += len(event.content)
        if event.thinking:
            self.thinking.append(event.thinking)
            self._pending_thinking.append(event.thinking)
            self._unsaved_bytes += len(event.thinking)
        self.started.set()
        self.changed.set()
        now = time.monotonic()
        if self._flush_task is None and (
            self._unsaved_bytes >= self.persist_bytes or now - self._last_persist >= self.persist_interval
        ):
            self._last_persist = now
            self._unsaved_bytes = 0
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    async def _to_thread(self, fn, *args):
        return await to_thread.run_sync(fn, *args, limiter=registry(self.runtime).limiter(self.runtime))

    async def _flush(self) -> None:
        try:
            self.db_writes += 1
            holds = await self._to_thread(
                _persist_partial,
                self.runtime,
                self.plan.assistant_message_id,
                "".join(self.content),
                "".join(self.thinking),
                self.plan.holder,
            )
        except Exception:  # the final write repeats everything; a failed batch loses nothing
            log.warning("could not save a partial reply", exc_info=True)
        else:
            if not holds:
                log.info("reply %s stopped: its sign-in was revoked", self.plan.assistant_message_id)
                self.request_stop("revoked")
        finally:
            self._flush_task = None

    def _record_usage(self) -> None:
        """Queue this reply's usage record (in memory; services/usage.py writes it in a batch)."""
        outcome, plan = self.outcome, self.plan
        try:
            usage_service.recorder(self.runtime).record(
                usage_service.UsageEvent(
                    user_id=plan.user_id,
                    model=plan.usage_model or plan.model_id,
                    provider_id=plan.provider_id,
                    outcome=cast(usage_service.Outcome, outcome.status),
                    prompt_tokens=outcome.usage.get("prompt_tokens"),
                    completion_tokens=outcome.usage.get("completion_tokens"),
                    prompt_chars=sum(len(m.content) for m in plan.request.messages),
                    completion_chars=sum(map(len, self.content)) + sum(map(len, self.thinking)),
                    duration_ms=float(outcome.timings.get("total_ms") or 0.0),
                    ttft_ms=outcome.timings.get("first_token_ms"),
                    error_code=(outcome.error or {}).get("code"),
                    client_ip=plan.client_ip,
                )
            )
        except Exception:  # accounting must never break a reply
            log.exception("could not record usage")

    def _real_tokens(self) -> int:
        """The tokens this reply used, for the limits: the upstream's counts, else an estimate (nothing
        when the upstream produced nothing)."""
        usage = self.outcome.usage
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            return prompt + completion
        produced = sum(map(len, self.content)) + sum(map(len, self.thinking))
        if not produced and self.outcome.status != MessageStatus.COMPLETE.value:
            return 0
        prompt_chars = sum(len(m.content) for m in self.plan.request.messages)
        return max(1, prompt_chars // 4) + (produced + 3) // 4

    async def _finish(self) -> None:
        outcome = self.outcome
        self._record_usage()
        admission = self.plan.admission
        try:
            if self._flush_task is not None:
                await asyncio.shield(self._flush_task)
            values: dict[str, Any] = {
                "content": "".join(self.content),
                "thinking": "".join(self.thinking),
                "status": outcome.status,
                "error": outcome.error,
                "usage": outcome.usage or None,
                "timings": outcome.timings or None,
                "served_by": outcome.served_by,
            }
            self.db_writes += 1
            outcome.message = await asyncio.shield(
                self._to_thread(_persist_final, self.runtime, self.plan, values, self._real_tokens())
            )
        except Exception as exc:
            log.exception("could not save the final reply")
            outcome.message = {"id": str(self.plan.assistant_message_id), "status": outcome.status}
            if is_disk_full(exc):  # the user learns the reply is not kept (docs/security.md, E6)
                outcome.status = MessageStatus.ERROR.value
                outcome.error = DISK_FULL
        finally:
            if admission is not None:
                if admission.settled:
                    limits_service.keeper(self.runtime).forget(admission)
                else:  # the final write failed: settle on its own
                    await limits_service.settle_soon(self.runtime, admission, self._real_tokens())
            self.started.set()
            self.finished.set()
            self.changed.set()
            registry(self.runtime).remove(self)
        if (
            outcome.status == MessageStatus.COMPLETE.value
            and self.plan.wants_title
            and self.runtime.settings.chat_title_generation
        ):
            title = generate_title(self.runtime, self.plan, values["content"])
            self.title_task = registry(self.runtime).spawn(title)

    # -- consumer

    def _take_pending(self) -> tuple[str, str]:
        content, thinking = "".join(self._pending_content), "".join(self._pending_thinking)
        self._pending_content.clear()
        self._pending_thinking.clear()
        return content, thinking

    def meta(self) -> dict[str, Any]:
        return {
            "conversation_id": str(self.plan.conversation_id),
            "user_message_id": str(self.plan.user_message_id),
            "assistant_message_id": str(self.plan.assistant_message_id),
            "attachments": self.plan.attachments,
            "citations": self.plan.citations,
        }

    def terminal_event(self, last: bool = True) -> ServerSentEvent:
        outcome = self.outcome
        if outcome.status == MessageStatus.ERROR.value:
            error = outcome.error or {"code": "upstream_error", "message": "the reply failed"}
            return ServerSentEvent(
                "error", {**error, "message_id": str(self.plan.assistant_message_id)}, last=last
            )
        done = {"message": outcome.message, "usage": outcome.usage, "timings": outcome.timings}
        return ServerSentEvent("done", done, last=last)

    async def title_events(self, ping_interval: float) -> AsyncIterator[list[ServerSentEvent]]:
        """After ``done``: wait for the title task (at most ``chat_title_timeout`` plus a grace for its
        write, with keep-alive pings), then a last ``title`` event if a title was stored. The task
        outlives a client that goes away, so the title is saved either way."""
        task = self.title_task
        if task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.runtime.settings.chat_title_timeout + TITLE_SAVE_GRACE
        while not task.done():
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.wait({task}, timeout=min(ping_interval, left))
            if not task.done():
                yield [KEEPALIVE]
        title = None if task.cancelled() or task.exception() is not None else task.result()
        if title:
            data = {"conversation_id": str(self.plan.conversation_id), "title": title}
            yield [ServerSentEvent("title", data, last=True)]

    def _pending_delta(self) -> list[ServerSentEvent]:
        content, thinking = self._take_pending()
        delta: dict[str, str] = {}
        if content:
            delta["content"] = content
        if thinking:
            delta["thinking"] = thinking
        return [ServerSentEvent("delta", delta)] if delta else []

    async def events(self, ping_interval: float) -> AsyncIterator[list[ServerSentEvent]]:
        """Batches of events, each sent in one write: meta (with the first delta when it is already
        there), coalesced deltas, and the last delta with done or error. ``[KEEPALIVE]`` after
        ``ping_interval`` seconds without an event. Closing it early stops the reply."""
        loop = asyncio.get_running_loop()
        last_sent = -1e9
        try:
            batch = [ServerSentEvent("meta", self.meta())]
            while True:
                if not batch and not self.changed.is_set():
                    try:
                        async with aio.timeout(ping_interval):
                            await self.changed.wait()
                    except aio.TIMEOUT_ERRORS:
                        yield [KEEPALIVE]
                        continue
                self.changed.clear()
                if not batch and not self.finished.is_set():
                    wait = last_sent + self.coalesce - loop.time()
                    if wait > 0:  # coalesce deltas, but the end of the reply goes out at once
                        try:
                            async with aio.timeout(wait):
                                await self.finished.wait()
                        except aio.TIMEOUT_ERRORS:
                            pass
                delta = self._pending_delta()
                if delta:
                    last_sent = loop.time()
                batch += delta
                if self.finished.is_set():  # the delta above already holds everything (no await since)
                    batch.append(self.terminal_event(last=self.title_task is None))
                    yield batch
                    async for title in self.title_events(ping_interval):
                        yield title
                    return
                if batch:
                    yield batch
                    batch = []
        finally:
            if not self.finished.is_set():
                self.request_stop("disconnect")


# --- entry points used by the routes --------------------------------------------------------------------


def _provider_domain_error(exc: ProviderError, stream: ChatStream) -> DomainError:
    headers = {"Retry-After": str(max(1, int(exc.retry_after)))} if exc.retry_after else None
    err = DomainError(exc.message, code=exc.code, detail=stream.meta(), headers=headers)
    err.status = exc.status if 400 <= exc.status < 600 else 502
    return err


def _release_request_transaction(session: Session) -> None:
    """End the transaction the auth dependency opened, right here on the event loop.

    On SQLite every transaction starts with BEGIN IMMEDIATE, so that read holds the write lock. Waiting
    for a worker thread while holding it can starve the pool (the other workers block on the lock, and
    the holder needs one of them to continue), so it is released before any await. Committing a
    transaction that wrote nothing is a few microseconds."""
    session.commit()


def _commit(session: Session, prepare, admit=None) -> ChatPlan:
    """Persist the prompt and, in the same transaction, pass the limits (a refusal rolls both back)."""
    try:
        plan = prepare(session)
        if admit is not None:
            plan.admission = admit(session, plan)
        session.commit()
        return plan
    except BaseException:
        session.rollback()
        raise


async def _launch(
    runtime: Runtime,
    session: Session,
    user: User,
    prepare,
    client_ip: str | None = None,
    session_id: str | None = None,
) -> ChatStream:
    """``session`` is the request's session (its transaction may hold SQLite's write lock, so no second
    session may write before it commits): the prompt is committed on it, in a worker thread."""
    settings = runtime.settings
    _release_request_transaction(session)
    reg = registry(runtime)

    def admit(s: Session, plan: ChatPlan) -> limits_service.Admission:
        request = plan.request
        tokens = limits_service.estimate_tokens(
            sum(len(m.content) for m in request.messages), request.options.get("max_tokens"), settings
        )
        return limits_service.admit(
            s.connection(),
            settings,
            user_id=user.id,
            role=user.role,
            key_id=None,
            tokens=tokens,
            stream=True,
            now=runtime.clock(),
            door="api",
        )

    plan = await to_thread.run_sync(_commit, session, prepare, admit, limiter=reg.limiter(runtime))
    if plan.admission is not None:
        limits_service.keeper(runtime).remember(plan.admission)
    plan.client_ip = client_ip
    plan.holder = SessionHolder.of(user, session_id)
    stream = ChatStream(runtime, plan)
    reg.add(stream)
    stream.start()
    # Errors the upstream reports at once (busy 503, rate limit 429, unknown model) become plain JSON.
    try:
        await stream.wait_started(settings.chat_preflight_timeout)
    except BaseException:  # the client went away before the stream started
        stream.request_stop("disconnect")
        raise
    if stream.finished.is_set() and stream.outcome.provider_error is not None and not stream.content:
        raise _provider_domain_error(stream.outcome.provider_error, stream)
    return stream


def _check_message(settings: Any, content: str) -> None:
    if len(content) > settings.chat_max_message_chars:
        raise InvalidInput(
            f"the message is too long ({len(content)} characters, at most {settings.chat_max_message_chars})",
            code="message_too_long",
        )
    if not content.strip():
        raise InvalidInput("the message is empty", code="message_empty")


async def _attach(
    runtime: Runtime, session: Session, user: User, gather, query: str | None
) -> Attached | None:
    """Before the prompt is saved: the files (owner's only), the vision check, the documents' modes and
    the retrieved passages. ``gather`` runs in a worker thread on the request's session, whose
    transaction it ends (SQLite's write lock is not held while the retrieval awaits)."""

    def run(s: Session) -> Attached:
        try:
            return gather(s)
        finally:
            s.commit()

    _release_request_transaction(session)
    attached: Attached = await to_thread.run_sync(run, session, limiter=registry(runtime).limiter(runtime))
    if attached.resolved is None:  # no files, no collections: at most the collections are cleared
        return attached if attached.store_knowledge is not None else None
    if attached.has_images:
        await _check_vision(runtime, attached.resolved)
    await _retrieve(runtime, session, user, attached, attached.query if query is None else query)
    return attached


async def start_chat(
    runtime: Runtime,
    session: Session,
    user: User,
    body: ChatCreate,
    client_ip: str | None = None,
    session_id: str | None = None,
) -> ChatStream:
    attached: Attached | None = None
    if body.attachments or body.knowledge is not None or body.conversation_id or body.parent_id:
        _check_message(runtime.settings, body.content)

        def gather(s: Session) -> Attached:
            conv = None
            if body.conversation_id is not None:
                conv = conversations_service.get_conversation(s, user, body.conversation_id)
            elif body.parent_id is not None:
                conv = conversations_service.get_message(s, user, body.parent_id)[1]
            options = body.options.compact() if body.options else {}
            return gather_attachments(
                s,
                runtime,
                user,
                model_id=body.model,
                file_ids=body.attachments,
                conv=conv,
                knowledge=body.knowledge,
                options=options,
            )

        attached = await _attach(runtime, session, user, gather, body.content)
    return await _launch(
        runtime,
        session,
        user,
        lambda s: prepare_chat(s, runtime, user, body, attached),
        client_ip,
        session_id,
    )


async def start_regenerate(
    runtime: Runtime,
    session: Session,
    user: User,
    message_id: uuid.UUID,
    body: ChatRegenerate,
    client_ip: str | None = None,
    session_id: str | None = None,
) -> ChatStream:

    def gather(s: Session) -> Attached:
        target, conv = conversations_service.get_message(s, user, message_id)
        model_id = body.model or (target.model if target.role == "assistant" else "") or conv.model
        prompt = target if target.role == "user" else None
        if target.role == "assistant" and target.parent_id is not None:
            prompt = s.get(Message, target.parent_id)
        if not model_id or prompt is None:
            return Attached()  # the prompt step refuses it with its own error
        attached = gather_attachments(
            s,
            runtime,
            user,
            model_id=model_id,
            file_ids=body.attachments,
            conv=conv,
            knowledge=body.knowledge,
            options=body.options.compact() if body.options else {},
        )
        attached.query = prompt.content
        return attached

    attached = await _attach(runtime, session, user, gather, None)
    return await _launch(
        runtime,
        session,
        user,
        lambda s: prepare_regenerate(s, runtime, user, message_id, body, attached),
        client_ip,
        session_id,
    )


def _owned_message_status(session: Session, user: User, message_id: uuid.UUID) -> str:
    message, _ = conversations_service.get_message(session, user, message_id)
    status = message.status
    session.commit()  # end the read transaction before waiting on anything else
    return status


async def stop_stream(
    runtime: Runtime, session: Session, user: User, message_id: uuid.UUID, wait: float = 5.0
) -> dict[str, Any]:
    """Stop the owner's active reply ``message_id``. 404 for other users' and unknown ids."""
    _release_request_transaction(session)
    stream = registry(runtime).get(message_id)
    if stream is not None and stream.plan.user_id == user.id:
        stream.request_stop("stop")
        with contextlib.suppress(*aio.TIMEOUT_ERRORS):
            await asyncio.wait_for(asyncio.shield(stream.finished.wait()), wait)
        return {"id": message_id, "status": stream.outcome.status, "stopped": stream.stop_reason == "stop"}
    status = await to_thread.run_sync(_owned_message_status, session, user, message_id)
    if status == MessageStatus.STREAMING.value:
        # Streamed by another instance sharing the database: ask it through the database.
        await to_thread.run_sync(cluster.request_remote_stop, runtime, message_id)
        status = await cluster.wait_remote_stop(runtime, message_id, wait) or status
        return {"id": message_id, "status": status, "stopped": status == MessageStatus.STOPPED.value}
    return {"id": message_id, "status": status, "stopped": False}


# --- titles ---------------------------------------------------------------------------------------------


def clean_title(raw: str) -> str:
    line = next((ln for ln in raw.strip().splitlines() if ln.strip()), "")
    line = line.strip().strip("\"'`*#“”‘’「」«»").strip()
    for prefix in ("Title:", "title:", "TITLE:"):
        if line.startswith(prefix):
            line = line[len(prefix) :].strip().strip("\"'`*“”")
    line = " ".join(line.split()).rstrip(".。!！")
    if len(line) > TITLE_MAX_CHARS:
        line = line[: TITLE_MAX_CHARS - 1].rstrip() + "…"
    return line


async def generate_title(runtime: Runtime, plan: ChatPlan, reply: str) -> str | None:
    """Ask the same model for a title and store it; returns it, or None when none was stored (the user
    titled the conversation meanwhile). Never raises: on any failure the fallback title stays."""
    request = ChatRequest(
        model=plan.request.model,
        messages=[
            ChatMessage(role="system", content=TITLE_PROMPT),
            ChatMessage(
                role="user", content=f"User: {plan.first_user_text[:2000]}\n\nAssistant: {reply[:1000]}"
            ),
        ],
        options={"temperature": 0.2, "max_tokens": 32},
    )
    parts: list[str] = []
    try:
        async with (
            aio.timeout(runtime.settings.chat_title_timeout),
            aclosing(plan.adapter.stream_chat(request, Timeouts())) as events,
        ):
            async for event in events:
                if isinstance(event, Delta) and event.content:
                    parts.append(event.content)
                    if sum(map(len, parts)) > 400:
                        break
                elif isinstance(event, Done):
                    break
        title = clean_title("".join(parts))
        if not title:
            return None

        def store() -> bool:
            with session_scope(runtime.session_factory) as session:
                return conversations_service.set_generated_title(session, plan.conversation_id, title)

        return title if await to_thread.run_sync(store) else None
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # titles are a nicety: log and keep the fallback
        log.info("title generation failed: %s", getattr(exc, "code", type(exc).__name__))
        return None


# --- app lifecycle --------------------------------------------------------------------------------------


def startup(runtime: Runtime) -> None:
    """Create the registry, claim this incarnation, and mark replies interrupted by a crash: this
    instance's own at once, the others' once stale (call from the lifespan, in a thread)."""
    reg = registry(runtime)
    if reg.incarnation is None:
        reg.incarnation = Incarnation(runtime.settings)
    if not reg.incarnation.claimed:  # again after a shutdown of the same app
        reg.incarnation.claim()
    recover_own(runtime)
    recover_interrupted(runtime)


def start_heartbeat(runtime: Runtime) -> None:
    """Start touching live rows and sweeping orphans (call from the lifespan, on the event loop)."""
    reg = registry(runtime)
    if reg.heartbeat is None:
        reg.heartbeat = asyncio.get_running_loop().create_task(_heartbeat(runtime))


async def shutdown(runtime: Runtime, timeout: float = 10.0) -> None:
    """Stop every active reply, wait for their partial answers to be saved, cancel title tasks."""
    reg = registry(runtime)
    if reg.heartbeat is not None:
        reg.heartbeat.cancel()
        reg.heartbeat = None
    streams = reg.all()
    for stream in streams:
        stream.request_stop("shutdown")
    tasks = [s.task for s in streams if s.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    for task in list(reg.background):
        task.cancel()
    if reg.background:
        await asyncio.wait(list(reg.background), timeout=2)
    if reg.incarnation is not None:
        reg.incarnation.release()
