"""Full-text search over the titles and messages of one user's conversations, with snippets and highlight
offsets. Three back-ends behind one function: SQLite FTS5, PostgreSQL full-text search, and a substring
(LIKE) search for scripts without spaces between words and for other databases."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Integer, and_, column, func, literal_column, or_, select, text
from sqlalchemy.orm import Session

from server.db.models import Conversation, Message, User

#: Private-use characters marking matches inside snippets; they never reach clients (turned into offsets).
_HL_START, _HL_END = "\ue000", "\ue001"
_WORD = re.compile(r"\w+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
MAX_SEARCH_TERMS = 16


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


def _matching_conversations_sqlite(
    session: Session, terms: list[str]
) -> tuple[ColumnElement[bool], dict[str, Any], bool]:
    """The condition on conversations, its parameters, and whether the words are frequent."""
    match = fts5_query(terms)
    title_rowids = text("SELECT rowid FROM conversations_fts WHERE conversations_fts MATCH :q").columns(
        column("rowid", Integer)
    )
    message_rowids = text("SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q").columns(
        column("rowid", Integer)
    )
    # Only whether there are more than _FREQUENT_MATCHES matters: the count stops there.
    hits = (
        session.scalar(
            text(
                "SELECT count(*) FROM (SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q LIMIT :cap)"
            ),
            {"q": match, "cap": _FREQUENT_MATCHES + 1},
        )
        or 0
    )
    if hits > _FREQUENT_MATCHES:
        # A frequent word: probe each conversation's messages against the (materialised) match set.
        in_messages: ColumnElement[bool] = (
            select(literal_column("1"))
            .select_from(Message)
            .where(
                Message.conversation_id == Conversation.id,
                literal_column("messages.rowid").in_(message_rowids),
            )
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


def _tsvector(col: Any) -> ColumnElement[Any]:
    # Must match the expression of the GIN indexes of revision 0002 exactly.
    return func.to_tsvector(literal_column("'simple'"), col)


def _pg_tsquery(query: str) -> ColumnElement[Any]:
    """Every word as a prefix, all required (like the SQLite FTS5 query): ``'volcan':* & 'alps':*``.
    ``query`` holds only words (search_terms), each quoted as a tsquery lexeme."""
    words = search_terms(query)
    return func.to_tsquery(
        literal_column("'simple'"), " & ".join("'" + w.replace("'", "''") + "':*" for w in words)
    )


def _matching_conversations_postgres(query: str) -> tuple[ColumnElement[bool], dict[str, Any]]:
    tsq = _pg_tsquery(query)
    via_messages = select(Message.conversation_id).where(_tsvector(Message.content).op("@@")(tsq))
    cond = or_(_tsvector(Conversation.title).op("@@")(tsq), Conversation.id.in_(via_messages))
    return cond, {}


def _like_pattern(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _matching_conversations_like(terms: list[str]) -> tuple[ColumnElement[bool], dict[str, Any]]:
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
        total = (
            0
            if page == 1
            else session.scalar(select(func.count()).select_from(Conversation).where(*where), params)
        )
        return [], total or 0
    convs = [row[0] for row in rows]
    total = rows[0][1]
    snippets = _message_snippets(
        session, dialect, use_like, terms, query, [c.id for c in convs], frequent=frequent
    )
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

            def matches(rowid: int, content: str) -> bool:
                return _has_all_prefixes(content, wanted)
        else:
            # One MATCH for the matching rowids, intersected here with the page's messages: asking
            # FTS5 for "MATCH ... AND rowid IN (page)" re-runs the full-text query once per rowid
            # (seconds for a frequent word).
            matching = set(
                session.execute(
                    text("SELECT rowid FROM messages_fts WHERE messages_fts MATCH :q"),
                    {"q": fts5_query(terms)},
                ).scalars()
            )

            def matches(rowid: int, content: str) -> bool:
                return rowid in matching

        # Snippets are cut in Python from the first matching message. Ids are read as stored (32 hex
        # digits): only the chosen message's becomes a UUID.
        by_hex = {cid.hex: cid for cid in conv_ids}
        page_rows: Sequence[Any] = session.execute(
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
    ranked = session.execute(sql).all()
    for cid, mid, marked, _score in ranked:
        if cid not in out:
            out[cid] = (mid, *_split_highlights(marked or ""))
    return out
