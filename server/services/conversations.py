"""Conversations: per-user listing, detail, update, delete, full-text search, export and import.

Ownership rule (security.md C1): every lookup is scoped to the current user, and another user's ids
answer exactly like ids that do not exist (404), never 403.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Integer, and_, column, func, literal_column, or_, select, text, update
from sqlalchemy.orm import Session

from server.db.base import utcnow
from server.db.models import Conversation, Message, MessageStatus, User
from server.errors import InvalidInput, NotFound
from server.schemas.conversation import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    ConversationExport,
    ConversationUpdate,
    ExportConversation,
)

log = logging.getLogger(__name__)

FALLBACK_TITLE_CHARS = 50
#: Private-use characters marking matches inside snippets; they never reach clients (turned into offsets).
_HL_START, _HL_END = "\ue000", "\ue001"
_WORD = re.compile(r"\w+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
MAX_SEARCH_TERMS = 16


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


# --- list / detail / update / delete --------------------------------------------------------------------


def message_counts(session: Session, conversation_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Messages per conversation, for one page of conversations only (one grouped query)."""
    if not conversation_ids:
        return {}
    rows = session.execute(
        select(Message.conversation_id, func.count(Message.id))
        .where(Message.conversation_id.in_(conversation_ids))
        .group_by(Message.conversation_id)
    ).all()
    return {cid: count for cid, count in rows}


def list_conversations(session: Session, user: User, page: int, size: int) -> tuple[list[Conversation], int]:
    total = session.scalar(select(func.count()).select_from(Conversation).where(Conversation.user_id == user.id))
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
    for conv in convs:
        conv.message_count = counts.get(conv.id, 0)  # transient attribute read by ConversationRead
    return convs, total or 0


def conversation_detail(session: Session, user: User, conversation_id: uuid.UUID) -> Conversation:
    conv = get_conversation(session, user, conversation_id)
    conv.messages = list_messages(session, conv.id)  # transient attribute read by ConversationDetail
    conv.message_count = len(conv.messages)
    return conv


def update_conversation(
    session: Session, user: User, conversation_id: uuid.UUID, data: ConversationUpdate
) -> Conversation:
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


def delete_conversation(session: Session, user: User, conversation_id: uuid.UUID) -> None:
    conv = get_conversation(session, user, conversation_id)
    # One statement for all messages (parent links cascade inside it), then the conversation.
    session.execute(Message.__table__.delete().where(Message.conversation_id == conv.id))
    session.delete(conv)
    session.flush()


def set_generated_title(session: Session, conversation_id: uuid.UUID, title: str) -> bool:
    """Store an automatic title unless the user has set one meanwhile. True when it was stored."""
    result = session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.title_edited.is_(False))
        # An automatic title is not user activity: keep updated_at (and so the list order) as it is.
        .values(title=title, updated_at=Conversation.updated_at)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)


# --- search ----------------------------------------------------------------------------------------------


def search_terms(query: str) -> list[str]:
    """Words of the user's query. Operators, quotes and brackets are dropped, so no input is FTS syntax."""
    return _WORD.findall(query)[:MAX_SEARCH_TERMS]


def fts5_query(terms: list[str]) -> str:
    # Every term becomes a quoted string with a prefix match: `"unbalanced"* "AND"*` means the two words.
    return " ".join('"' + t.replace('"', '""') + '"*' for t in terms)


def _split_highlights(marked: str) -> tuple[str, list[tuple[int, int]]]:
    plain: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    start: int | None = None
    for ch in marked:
        if ch == _HL_START:
            start = pos
        elif ch == _HL_END:
            if start is not None and pos > start:
                spans.append((start, pos))
            start = None
        else:
            plain.append(ch)
            pos += 1
    return "".join(plain), spans


def _plain_highlights(text_: str, terms: list[str], width: int = 160) -> tuple[str, list[tuple[int, int]]]:
    """Snippet and highlight offsets computed in Python (titles, LIKE fallback)."""
    lowered = text_.lower()
    first = min((i for i in (lowered.find(t.lower()) for t in terms) if i >= 0), default=0)
    begin = max(0, first - width // 3)
    snippet = text_[begin : begin + width]
    prefix = "…" if begin > 0 else ""
    suffix = "…" if begin + width < len(text_) else ""
    snippet = prefix + snippet + suffix
    spans: list[tuple[int, int]] = []
    low = snippet.lower()
    for t in terms:
        tl = t.lower()
        i = low.find(tl)
        while i >= 0 and tl:
            spans.append((i, i + len(tl)))
            i = low.find(tl, i + len(tl))
    spans.sort()
    return snippet, spans


_TOKEN = re.compile(r"[^\W_]+")


def _fold(text_: str) -> str:
    """Case and diacritics folded, as the index's tokenizer does (unicode61, remove_diacritics 2)."""
    if text_.isascii():
        return text_.lower()
    decomposed = unicodedata.normalize("NFKD", text_.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _has_all_prefixes(content: str, folded_terms: list[str]) -> bool:
    """Whether every term starts a word of ``content`` (the FTS5 query ``"a"* "b"*``)."""
    folded = _fold(content)
    if not all(term in folded for term in folded_terms):  # cheap rejection first
        return False
    words = _TOKEN.findall(folded)
    return all(any(word.startswith(term) for word in words) for term in folded_terms)


#: Above this many matching messages, conversations are tested one by one (newest first, stopping at
#: the page) instead of collecting the conversations of every matching message.
_FREQUENT_MATCHES = 3000


def _matching_conversations_sqlite(session: Session, terms: list[str]):  # noqa: ANN202
    """The condition on conversations, its parameters, and whether the words are frequent."""
    match = fts5_query(terms)
    title_rowids = text("SELECT rowid FROM conversations_fts WHERE conversations_fts MATCH :q").columns(
        column("rowid", Integer)
    )
    message_rowids = text("SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q").columns(
        column("rowid", Integer)
    )
    # Only whether there are more than _FREQUENT_MATCHES matters: the count stops there.
    hits = session.scalar(
        text("SELECT count(*) FROM (SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q LIMIT :cap)"),
        {"q": match, "cap": _FREQUENT_MATCHES + 1},
    ) or 0
    if hits > _FREQUENT_MATCHES:
        # A frequent word: probe each conversation's messages against the (materialised) match set.
        in_messages = (
            select(literal_column("1"))
            .select_from(Message)
            .where(Message.conversation_id == Conversation.id, literal_column("messages.rowid").in_(message_rowids))
            .correlate(Conversation)
            .exists()
        )
    else:
        # A rare word: go from the few matching messages to their conversations.
        in_messages = Conversation.id.in_(
            select(Message.conversation_id).where(literal_column("messages.rowid").in_(message_rowids))
        )
    cond = or_(literal_column("conversations.rowid").in_(title_rowids), in_messages)
    return cond, {"q": match}, hits > _FREQUENT_MATCHES


def _tsvector(col):
    # Must match the expression of the GIN indexes of revision 0002 exactly.
    return func.to_tsvector(literal_column("'simple'"), col)


def _pg_tsquery(query: str):
    """Every word as a prefix, all required (like the SQLite FTS5 query): ``'volcan':* & 'alps':*``.
    ``query`` holds only words (search_terms), each quoted as a tsquery lexeme."""
    words = search_terms(query)
    return func.to_tsquery(literal_column("'simple'"), " & ".join("'" + w.replace("'", "''") + "':*" for w in words))


def _matching_conversations_postgres(query: str):
    tsq = _pg_tsquery(query)
    via_messages = select(Message.conversation_id).where(_tsvector(Message.content).op("@@")(tsq))
    cond = or_(_tsvector(Conversation.title).op("@@")(tsq), Conversation.id.in_(via_messages))
    return cond, {}


def _like_pattern(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _matching_conversations_like(terms: list[str]):
    """Substring search for scripts without spaces between words (Chinese, Japanese), which word
    tokenizers index as one long token. Every term must occur in the title or in one message."""
    conds = []
    for term in terms:
        pattern = _like_pattern(term)
        in_messages = select(Message.conversation_id).where(Message.content.like(pattern, escape="\\"))
        conds.append(or_(Conversation.title.like(pattern, escape="\\"), Conversation.id.in_(in_messages)))
    return and_(*conds), {}


def search_conversations(
    session: Session, user: User, query: str, page: int, size: int
) -> tuple[list[dict[str, Any]], int]:
    terms = search_terms(query)
    if not terms:
        return [], 0
    dialect = session.get_bind().dialect.name
    use_like = bool(_CJK.search(query)) or dialect not in ("sqlite", "postgresql")
    frequent = False
    if use_like:
        cond, params = _matching_conversations_like(terms)
    elif dialect == "sqlite":
        cond, params, frequent = _matching_conversations_sqlite(session, terms)
    else:
        cond, params = _matching_conversations_postgres(" ".join(terms))
    where = (Conversation.user_id == user.id, cond)
    # The page and the total in one pass over the matches (a window count), not two.
    rows = session.execute(
        select(Conversation, func.count().over().label("total"))
        .where(*where)
        .order_by(Conversation.updated_at.desc(), Conversation.id)
        .offset((page - 1) * size)
        .limit(size),
        params,
    ).all()
    if not rows:
        total = 0 if page == 1 else session.scalar(select(func.count()).select_from(Conversation).where(*where), params)
        return [], total or 0
    convs = [row[0] for row in rows]
    total = rows[0][1]
    snippets = _message_snippets(session, dialect, use_like, terms, query, [c.id for c in convs], frequent=frequent)
    hits = []
    for conv in convs:
        found = snippets.get(conv.id)
        if found is not None:
            message_id, snippet, spans = found
        else:
            message_id = None
            snippet, spans = _plain_highlights(conv.title, terms)
        hits.append(
            {
                "id": conv.id,
                "title": conv.title,
                "title_edited": conv.title_edited,
                "pinned": conv.pinned,
                "model": conv.model,
                "created_at": conv.created_at,
                "updated_at": conv.updated_at,
                "snippet": snippet,
                "highlights": spans,
                "message_id": message_id,
            }
        )
    return hits, total


def _message_snippets(
    session: Session,
    dialect: str,
    use_like: bool,
    terms: list[str],
    query: str,
    conv_ids: list[uuid.UUID],
    *,
    frequent: bool = False,
) -> dict[uuid.UUID, tuple[uuid.UUID, str, list[tuple[int, int]]]]:
    """Best matching message (and its snippet) for each conversation of one result page."""
    out: dict[uuid.UUID, tuple[uuid.UUID, str, list[tuple[int, int]]]] = {}
    if use_like:
        conds = [Message.content.like(_like_pattern(t), escape="\\") for t in terms]
        rows = session.execute(
            select(Message.conversation_id, Message.id, Message.content)
            .where(Message.conversation_id.in_(conv_ids), or_(*conds))
            .order_by(Message.created_at)
        ).all()
        for cid, mid, content in rows:
            if cid not in out:
                out[cid] = (mid, *_plain_highlights(content, terms))
        return out
    if dialect == "sqlite":
        if frequent:
            # A frequent word is in most messages: reading every match (tens of thousands of rowids)
            # costs more than the whole search. The page's messages are checked here instead, the way
            # the index tokenizes (unicode61, diacritics removed, every term a word prefix); the
            # conversations themselves were chosen by the index.
            wanted = [_fold(t) for t in terms]

            def matches(_rowid: int, content: str) -> bool:
                return _has_all_prefixes(content, wanted)
        else:
            # One MATCH for the matching rowids, intersected here with the page's messages: asking
            # FTS5 for "MATCH ... AND rowid IN (page)" re-runs the full-text query once per rowid
            # (seconds for a frequent word).
            matching = set(
                session.execute(
                    text("SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q"), {"q": fts5_query(terms)}
                ).scalars()
            )

            def matches(rowid: int, _content: str) -> bool:
                return rowid in matching

        # Snippets are cut in Python from the first matching message. Ids are read as stored (32 hex
        # digits): only the chosen message's becomes a UUID.
        by_hex = {cid.hex: cid for cid in conv_ids}
        page_rows = session.execute(
            select(
                literal_column("messages.rowid"),
                literal_column("messages.conversation_id"),
                literal_column("messages.id"),
                Message.content,
            )
            .where(Message.conversation_id.in_(conv_ids))
            .order_by(Message.created_at)
        ).all()
        for rowid, cid_hex, mid_hex, content in page_rows:
            cid = by_hex[cid_hex]
            if cid not in out and matches(rowid, content):
                out[cid] = (uuid.UUID(mid_hex), *_plain_highlights(content, terms))
        return out
    tsq = _pg_tsquery(" ".join(terms))
    options = f"StartSel={_HL_START}, StopSel={_HL_END}, MaxWords=30, MinWords=10"
    sql = (
        select(
            Message.conversation_id,
            Message.id,
            func.ts_headline(literal_column("'simple'"), Message.content, tsq, options).label("snippet"),
            func.ts_rank(_tsvector(Message.content), tsq).label("score"),
        )
        .where(Message.conversation_id.in_(conv_ids), _tsvector(Message.content).op("@@")(tsq))
        .order_by(literal_column("score").desc())
    )
    rows = session.execute(sql).all()
    for cid, mid, marked, _score in rows:
        if cid not in out:
            out[cid] = (mid, *_split_highlights(marked or ""))
    return out


# --- export ----------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None


def _export_one(conv: Conversation, messages: list[Message]) -> dict[str, Any]:
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
    return _envelope([_export_one(conv, list_messages(session, conv.id))])


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
    return _envelope([_export_one(c, by_conv[c.id]) for c in convs])


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


def export_markdown(session: Session, user: User, conversation_id: uuid.UUID) -> tuple[str, str]:
    """(title, markdown) of the current branch."""
    conv = get_conversation(session, user, conversation_id)
    messages = list_messages(session, conv.id)
    branch = current_branch(messages)
    lines = [f"# {conv.title or 'Conversation'}", ""]
    meta = [f"- Created: {_iso(conv.created_at)}"]
    if conv.model:
        meta.append(f"- Model: {conv.model}")
    if len(branch) < len(messages):
        meta.append(f"- Showing the current branch ({len(branch)} of {len(messages)} messages)")
    lines += meta + [""]
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
        lines += [m.content, ""]
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
                f"{where}: message {m.id} has a parent that is not in this conversation", code="invalid_import"
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
                }
            )
        # One executemany per conversation; rows are in parent-first order for the FK check.
        for start in range(0, len(rows), 500):
            session.execute(Message.__table__.insert(), rows[start : start + 500])
        ids[conv.id] = new_conv.id
        count += len(rows)
    session.flush()
    log.info("user %s imported %d conversations (%d messages) at %s", user.id, len(ids), count, now.isoformat())
    return ids, count
