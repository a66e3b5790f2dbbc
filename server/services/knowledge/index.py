"""The retrieval index: vector search over the chunks' embeddings, full-text search (FTS5 on SQLite, a
``to_tsvector('simple', text)`` GIN index on PostgreSQL), and reciprocal rank fusion of the two lists.

Vectors are searched in the database: on SQLite through sqlite-vec (server/db/sqlite_vec.py), one ``vec0``
table per dimension (``knowledge_vec_<dims>``: each chunk's sign bits, partitioned by embedding model, kept
in step with ``knowledge_chunks`` by triggers) scanned by Hamming distance, its best candidates re-ranked
exactly by the float32 embeddings stored with the chunks; on PostgreSQL with the ``vector`` extension
through ``knowledge_chunks.embedding_vec`` and its HNSW indexes (revision 0015). Only where neither is
available does a process keep, per embedding model, every chunk's vector in one float32 matrix
(:class:`VectorCache`). See docs/knowledge.md for the figures and the trade-offs."""

from __future__ import annotations

import contextlib
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from server.db import sqlite_vec
from server.db.session import session_scope
from server.runtime import Runtime

#: Reciprocal rank fusion constant (Cormack et al.: 60 works well across collections).
RRF_K = 60
#: How many hits each list contributes to the fusion.
CANDIDATES = 50
#: Full text: the best this many matches of the whole index are filtered down to the searched files (a
#: bound on the work for frequent words; a small collection among many chunks may then get fewer text hits,
#: the vector list still covers it).
TEXT_CAP = 2000
#: Full text: words in more than this share of a model's chunks are left out of the query, and always
#: those in more than FREQUENT_MAX chunks (never those in FREQUENT_MIN or fewer). Full text is there for
#: the rare words embeddings blur (names, codes, numbers); ranking costs in proportion to the matches, so
#: common words, which tell passages apart poorly anyway, are left to the vectors.
FREQUENT_SHARE = 0.02
FREQUENT_MIN = 50
FREQUENT_MAX = 250

_WORD = re.compile(r"\w+", re.UNICODE)
#: Words that match nearly every passage: dropped from the full-text query (they cost time, rank nothing).
_STOPWORD_TEXT = (
    "a an and are as at be by for from has have how in is it its of on or that the this to was were what "
    "when where which who why will with does do did can you your i we they he she"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


#: From this many vectors on, a search first ranks by a low-rank projection and re-ranks the best
#: candidates exactly (a scan of REDUCED_DIMS numbers per chunk instead of all of them).
TWO_STAGE_MIN = 20_000
REDUCED_DIMS = 96
#: Candidates re-ranked exactly: this many times the hits wanted (at least MIN_CANDIDATES).
OVERSAMPLE = 8
MIN_CANDIDATES = 400
#: How often (seconds) a process recounts a model's chunks to notice deletions.
RECOUNT_SECONDS = 5.0


@dataclass
class _Matrix:
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    files: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    codes: dict[uuid.UUID, int] = field(default_factory=dict)
    max_id: int = 0
    count: int = 0
    #: The two-stage search's projection (dims x REDUCED_DIMS, orthonormal) and the projected vectors.
    basis: np.ndarray | None = None
    reduced: np.ndarray | None = None
    counted_at: float = 0.0


def _fit_basis(vectors: np.ndarray) -> np.ndarray:
    """The top principal directions of the vectors' second moments (inner products are preserved best)."""
    rng = np.random.default_rng(0)
    sample = vectors[rng.choice(vectors.shape[0], size=min(vectors.shape[0], 20_000), replace=False)]
    moments = (sample.T @ sample).astype(np.float64)
    _, eigenvectors = np.linalg.eigh(moments)
    return np.ascontiguousarray(eigenvectors[:, ::-1][:, :REDUCED_DIMS].astype(np.float32))


def _with_projection(matrix: _Matrix, fresh_from: int) -> _Matrix:
    """Keep the low-rank projection up to date: fitted once past TWO_STAGE_MIN, then new rows projected."""
    dims = matrix.vectors.shape[1] if matrix.vectors.ndim == 2 else 0
    if matrix.count < TWO_STAGE_MIN or dims <= REDUCED_DIMS * 2:
        matrix.basis = matrix.reduced = None
        return matrix
    if matrix.basis is None or matrix.reduced is None or fresh_from == 0:
        matrix.basis = _fit_basis(matrix.vectors)
        matrix.reduced = np.ascontiguousarray(matrix.vectors @ matrix.basis)
    else:
        added = matrix.vectors[fresh_from:] @ matrix.basis
        matrix.reduced = np.ascontiguousarray(np.vstack([matrix.reduced, added]))
    return matrix


class VectorCache:
    """This process's embedding matrices, one per embedding model (and whether PostgreSQL has pgvector).
    Used only where the database has no vector index (see :func:`uses_matrix`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, _Matrix] = {}
        self.pgvector: bool | None = None

    def _load(self, session: Session, model: str, after: int, matrix: _Matrix) -> _Matrix:
        rows = session.execute(
            text(
                "SELECT id, file_id, embedding FROM knowledge_chunks "
                "WHERE embedding_model = :m AND id > :after AND embedding IS NOT NULL ORDER BY id"
            ),
            {"m": model, "after": after},
        ).all()
        if not rows:
            return matrix
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        codes = matrix.codes
        files = np.empty(len(rows), dtype=np.int32)
        for i, r in enumerate(rows):
            fid = r[1] if isinstance(r[1], uuid.UUID) else uuid.UUID(str(r[1]))
            files[i] = codes.setdefault(fid, len(codes))
        blob = b"".join(bytes(r[2]) for r in rows)
        vectors = np.frombuffer(blob, dtype="<f4").reshape(len(rows), -1)
        if matrix.vectors.shape[0] and matrix.vectors.shape[1] != vectors.shape[1]:
            # Mixed dimensions under one model id (the model was replaced upstream): keep the newest.
            matrix = _Matrix(codes=codes)
        fresh_from = matrix.vectors.shape[0]
        if fresh_from:
            vectors = np.vstack([matrix.vectors, vectors])
            ids = np.concatenate([matrix.ids, ids])
            files = np.concatenate([matrix.files, files])
        loaded = _Matrix(
            ids,
            files,
            np.ascontiguousarray(vectors),
            codes,
            int(ids[-1]),
            len(ids),
            matrix.basis,
            matrix.reduced,
        )
        return _with_projection(loaded, fresh_from)

    def peek(self, model: str) -> _Matrix | None:
        """The model's matrix as last loaded (no database check)."""
        return self._by_model.get(model)

    def _count(self, session: Session, model: str) -> int:
        # Every chunk of a model with embeddings has one (the model "" has none), so the index answers.
        return int(
            session.execute(
                text("SELECT count(*) FROM knowledge_chunks WHERE embedding_model = :m"), {"m": model}
            ).scalar_one()
        )

    def matrix(self, session: Session, model: str) -> _Matrix:
        """The model's matrix, brought up to date: new chunks (a higher id) are appended at once; a
        deletion is noticed by a recount, done when chunks were added and otherwise every RECOUNT_SECONDS,
        and reloads the matrix (until then a deleted chunk's id may come out of the search: the caller
        loads the chunks by id and skips the missing ones)."""
        max_id = int(
            session.execute(
                text("SELECT coalesce(max(id), 0) FROM knowledge_chunks WHERE embedding_model = :m"),
                {"m": model},
            ).scalar_one()
        )
        now = time.monotonic()
        with self._lock:
            current = self._by_model.get(model) or _Matrix()
            if current.max_id == max_id and now - current.counted_at < RECOUNT_SECONDS:
                return current
            count = self._count(session, model)
            if current.max_id == max_id and current.count == count:
                current.counted_at = now
                return current
            updated = self._load(session, model, current.max_id, current)
            if updated.count != count:  # something was deleted (or re-indexed): reload everything
                updated = self._load(session, model, 0, _Matrix())
            updated.counted_at = now
            self._by_model[model] = updated
            return updated


_cache_lock = threading.Lock()


def vector_cache(runtime: Runtime) -> VectorCache:
    """The process's matrices (``runtime.knowledge_vectors``), made on first use."""
    with _cache_lock:
        if runtime.knowledge_vectors is None:
            runtime.knowledge_vectors = VectorCache()
        return runtime.knowledge_vectors


def uses_pgvector(runtime: Runtime, session: Session) -> bool:
    """Whether vectors live in pgvector's ``embedding_vec`` column (PostgreSQL with the extension)."""
    cache = vector_cache(runtime)
    if cache.pgvector is None:
        if session.get_bind().dialect.name != "postgresql":
            cache.pgvector = False
        else:
            found = session.execute(
                text(
                    "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = 'knowledge_chunks' AND column_name = 'embedding_vec'"
                )
            ).first()
            cache.pgvector = found is not None
    return cache.pgvector


def _vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


#: pgvector's HNSW index takes vectors of at most this many dimensions (more: exact search).
HNSW_MAX_DIMS = 2000


def ensure_hnsw(session: Session, dims: int) -> None:
    """The HNSW index (cosine) of the vectors with ``dims`` dimensions: one partial expression index per
    dimension, created the first time such vectors are stored."""
    if not 0 < dims <= HNSW_MAX_DIMS:
        return
    d = int(dims)
    savepoint = session.begin_nested()
    try:
        session.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS ix_knowledge_chunks_hnsw_{d} ON knowledge_chunks "
                f"USING hnsw ((embedding_vec::vector({d})) vector_cosine_ops) "
                f"WHERE vector_dims(embedding_vec) = {d}"
            )
        )
    except DBAPIError:  # created by another worker at the same moment
        savepoint.rollback()
    else:
        savepoint.commit()


def store_pgvectors(session: Session, rows: Sequence[tuple[int, np.ndarray]]) -> None:
    """Copy freshly inserted chunks' vectors into ``embedding_vec`` (PostgreSQL with pgvector)."""
    if not rows:
        return
    ensure_hnsw(session, int(rows[0][1].shape[0]))
    session.execute(
        text("UPDATE knowledge_chunks SET embedding_vec = CAST(:v AS vector) WHERE id = :id"),
        [{"id": chunk_id, "v": _vector_literal(vector)} for chunk_id, vector in rows],
    )


def _pg_vector_search(
    session: Session, model: str, query: np.ndarray, file_ids: Sequence[uuid.UUID], k: int
) -> list[tuple[int, float]]:
    """Nearest chunks by pgvector. First through the HNSW index without the collection's filter (so the
    planner cannot prefer an exact scan of the filtered rows), oversampled, then filtered; when that leaves
    fewer than ``k`` (a small collection among many chunks), an exact search of the wanted files' rows."""
    d = int(query.shape[0])
    params = {"q": _vector_literal(query), "m": model, "files": list(file_ids), "k": k}
    files = bindparam("files", expanding=True, type_=Uuid())
    hits: list[tuple[int, float]] = []
    if d <= HNSW_MAX_DIMS:
        session.execute(text("SET LOCAL hnsw.ef_search = 100"))
        # Scans go on until the LIMIT is met (pgvector >= 0.8; ignored before).
        with contextlib.suppress(DBAPIError), session.begin_nested():
            session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        ann = text(
            f"SELECT id, 1 - dist FROM (SELECT id, file_id, embedding_model, "
            f"embedding_vec::vector({d}) <=> CAST(:q AS vector({d})) AS dist FROM knowledge_chunks "
            f"WHERE vector_dims(embedding_vec) = {d} "
            f"ORDER BY embedding_vec::vector({d}) <=> CAST(:q AS vector({d})) LIMIT :n) s "
            "WHERE embedding_model = :m AND file_id IN :files ORDER BY dist LIMIT :k"
        ).bindparams(files)
        n = max(k * OVERSAMPLE, MIN_CANDIDATES)
        hits = [(int(r[0]), float(r[1])) for r in session.execute(ann, {**params, "n": n})]
    if len(hits) < k:
        exact = text(
            f"SELECT id, 1 - (embedding_vec <=> CAST(:q AS vector)) FROM knowledge_chunks "
            f"WHERE vector_dims(embedding_vec) = {d} AND embedding_model = :m AND file_id IN :files "
            "ORDER BY embedding_vec <=> CAST(:q AS vector) LIMIT :k"
        ).bindparams(files)
        hits = [(int(r[0]), float(r[1])) for r in session.execute(exact, params)]
    hits.sort(key=lambda hit: -hit[1])  # relaxed order: nearly sorted
    return hits


#: sqlite-vec: rows per vec0 chunk (its largest; fewer, larger chunks make a scan faster).
VEC_CHUNK_SIZE = 4096
#: sqlite-vec: the largest vectors given a vec0 table (sqlite-vec's own limit is 8192 dimensions).
VEC_MAX_DIMS = 8192
#: sqlite-vec: candidates taken by Hamming distance and re-ranked exactly, this many times the hits wanted
#: (at least COARSE_MIN). A vec0 scan costs more the more rows it keeps (100k x 768 on the 2-core machine of
#: docs/knowledge.md: 7.3 ms for 50, 8.9 ms for 75, 11 ms for 100; fetching 100 rows to re-rank, 0.8 ms).
#: Retrieval p95 at 100k chunks on that machine idle: 23.6 ms with 1.5 x k, 25.4 ms with 2 x k, 31.9 ms with
#: 3 x k (the target is 30 ms); 2 x k keeps more of the exact neighbours than 1.5 x k.
COARSE_OVERSAMPLE = 2.0
COARSE_MIN = 64
#: sqlite-vec: a collection of more files than this is searched exactly (one bound parameter per file).
VEC_MAX_FILTER_FILES = 5000


def uses_sqlite_vec(session: Session) -> bool:
    """Whether vectors are searched through sqlite-vec (SQLite, with the extension registered)."""
    return session.get_bind().dialect.name == "sqlite" and sqlite_vec.available()


def uses_matrix(runtime: Runtime, session: Session) -> bool:
    """Whether vectors are searched in process (no vector index in the database: the fallback)."""
    return not uses_sqlite_vec(session) and not uses_pgvector(runtime, session)


def vec_table(dims: int) -> str:
    return f"knowledge_vec_{int(dims)}"


def _vec_indexable(dims: int) -> bool:
    # bit[] columns take whole bytes.
    return 0 < dims <= VEC_MAX_DIMS and dims % 8 == 0


def _vec_state(session: Session, dims: int) -> tuple[bool, bool]:
    """Whether the dimension's vec0 table exists, and whether its insert trigger does (a process without
    sqlite-vec drops the triggers, server/db/sqlite_vec.py: the table may then miss chunks)."""
    table = vec_table(dims)
    names = set(
        session.execute(
            text("SELECT name FROM sqlite_master WHERE name IN (:t, :ai)"), {"t": table, "ai": f"{table}_ai"}
        ).scalars()
    )
    return table in names, f"{table}_ai" in names


def ensure_vec_index(session: Session, dims: int) -> bool:
    """The vec0 table of the ``dims``-dimensional vectors (sqlite-vec), made the first time such vectors are
    stored and then filled with the chunks already there, and the triggers that keep it in step with
    ``knowledge_chunks`` (a chunk inserted, changed, or deleted by any path, cascades included). Where the
    triggers are missing (dropped by a process without sqlite-vec, or by a rebuild of the table), the table
    is made again. Whether the table exists (bit columns need whole bytes)."""
    d = int(dims)
    if not _vec_indexable(d):
        return False
    table, size = vec_table(d), 4 * d
    columns = f"INSERT INTO {table} (chunk_id, embedding_model, file_id, embedding)"
    # VALUES, not INSERT ... SELECT: vec0 (0.1.9) then loses the bit vector's type after a DELETE in the
    # same trigger. The two update triggers' conditions exclude each other, so their order does not matter.
    row = "VALUES (new.id, new.embedding_model, new.file_id, vec_bit(vec_quantize_binary(new.embedding)))"
    exists, in_step = _vec_state(session, d)
    if exists and not in_step:  # written to without the triggers: made again from the chunks
        session.execute(text(f"DROP TABLE {table}"))
    created = not (exists and in_step)
    if created:
        session.execute(
            text(
                f"CREATE VIRTUAL TABLE {table} USING vec0(chunk_id integer primary key, embedding_model text "
                f"partition key, file_id text, embedding bit[{d}], chunk_size={VEC_CHUNK_SIZE})"
            )
        )
    changed = "AFTER UPDATE OF id, file_id, embedding_model, embedding ON knowledge_chunks"
    for sql in (
        f"CREATE TRIGGER IF NOT EXISTS {table}_ai AFTER INSERT ON knowledge_chunks "
        f"WHEN length(new.embedding) = {size} BEGIN {columns} {row}; END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_ad AFTER DELETE ON knowledge_chunks "
        f"WHEN length(old.embedding) = {size} BEGIN DELETE FROM {table} WHERE chunk_id = old.id; END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_au {changed} WHEN length(new.embedding) = {size} "
        f"BEGIN DELETE FROM {table} WHERE chunk_id = old.id; {columns} {row}; END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_aux {changed} "
        f"WHEN length(old.embedding) = {size} AND coalesce(length(new.embedding), 0) <> {size} "
        f"BEGIN DELETE FROM {table} WHERE chunk_id = old.id; END",
    ):
        session.execute(text(sql))
    if created:
        session.execute(
            text(
                f"{columns} SELECT id, embedding_model, file_id, vec_quantize_binary(embedding) "
                f"FROM knowledge_chunks WHERE length(embedding) = {size}"
            )
        )
    return True


def store_vectors(runtime: Runtime, session: Session, rows: Sequence[tuple[int, np.ndarray]]) -> None:
    """Index freshly inserted (and flushed) chunks' vectors: pgvector's column on PostgreSQL; on SQLite with
    sqlite-vec the triggers do it once the dimension's vec0 table exists (made here, filled on creation)."""
    if not rows:
        return
    if uses_pgvector(runtime, session):
        store_pgvectors(session, rows)
    elif uses_sqlite_vec(session):
        ensure_vec_index(session, int(rows[0][1].shape[0]))


def _rerank(
    session: Session,
    model: str,
    query: np.ndarray,
    ids: Sequence[int] | None,
    file_ids: Sequence[uuid.UUID],
    k: int,
) -> list[tuple[int, float]]:
    """Exact cosine similarity of the chunks ``ids`` (all of ``file_ids``' chunks when None) among
    ``file_ids``' chunks of ``model``, from the stored float32 embeddings; the best ``k``, best first."""
    size = 4 * int(query.shape[0])
    if ids is None:
        sql = text(
            "SELECT id, embedding FROM knowledge_chunks "
            "WHERE embedding_model = :m AND file_id IN :files AND length(embedding) = :size"
        ).bindparams(bindparam("files", expanding=True, type_=Uuid()))
        rows = session.execute(sql, {"m": model, "files": list(file_ids), "size": size}).all()
    else:
        if not ids:
            return []
        # A few candidates by primary key; the files are checked here (cheaper than binding every file).
        sql = text(
            "SELECT id, embedding, file_id FROM knowledge_chunks "
            "WHERE id IN :ids AND embedding_model = :m AND length(embedding) = :size"
        ).bindparams(bindparam("ids", expanding=True))
        wanted = {f.hex for f in file_ids}
        found = session.execute(sql, {"ids": list(ids), "m": model, "size": size}).all()
        rows = [r for r in found if str(r[2]).replace("-", "") in wanted]
    if not rows:
        return []
    vectors = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4").reshape(len(rows), -1)
    scores = vectors @ query
    k = min(k, len(rows))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(rows[i][0]), float(scores[i])) for i in top]


def _vec_search(
    runtime: Runtime, session: Session, model: str, query: np.ndarray, file_ids: Sequence[uuid.UUID], k: int
) -> list[tuple[int, float]]:
    """Nearest chunks through sqlite-vec: the model's partition scanned by Hamming distance of the sign
    bits, oversampled, the candidates of the wanted files re-ranked exactly; when that leaves fewer than
    ``k`` (a collection among many chunks), the scan again restricted to the wanted files. Where the
    dimension has no vec0 table yet (chunks stored before this index existed), an exact scan, and the table
    is made (or brought back in step) for the next searches."""
    d = int(query.shape[0])
    query = np.ascontiguousarray(query, dtype="<f4")
    if not _vec_indexable(d) or len(file_ids) > VEC_MAX_FILTER_FILES:
        return _rerank(session, model, query, None, file_ids, k)
    if _vec_state(session, d) != (True, True):
        hits = _rerank(session, model, query, None, file_ids, k)
        if hits:  # made in a write transaction of its own (the caller's reads only); tried again next time
            with contextlib.suppress(DBAPIError), session_scope(runtime.session_factory) as writing:
                ensure_vec_index(writing, d)
        return hits
    n = max(int(k * COARSE_OVERSAMPLE), COARSE_MIN)
    knn = (
        f"SELECT chunk_id FROM {vec_table(d)} WHERE embedding MATCH vec_quantize_binary(:q) AND k = :n "
        "AND embedding_model = :m"
    )
    params = {"q": query.tobytes(), "n": n, "m": model}
    ids = [int(r[0]) for r in session.execute(text(knn), params)]
    hits = _rerank(session, model, query, ids, file_ids, k)
    if len(hits) >= k or len(ids) < n:  # enough, or every chunk of the model was a candidate
        return hits
    wanted = text(knn + " AND file_id IN :files").bindparams(bindparam("files", expanding=True))
    ids = [int(r[0]) for r in session.execute(wanted, {**params, "files": [f.hex for f in file_ids]})]
    return _rerank(session, model, query, ids, file_ids, k)


def vector_search(
    runtime: Runtime,
    session: Session,
    model: str,
    query: np.ndarray,
    file_ids: Sequence[uuid.UUID],
    k: int = CANDIDATES,
) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity) of the ``k`` nearest chunks among ``file_ids``' chunks, best first."""
    if not model or not file_ids:
        return []
    if uses_pgvector(runtime, session):
        return _pg_vector_search(session, model, query, file_ids, k)
    if uses_sqlite_vec(session):
        return _vec_search(runtime, session, model, query, file_ids, k)
    m = vector_cache(runtime).matrix(session, model)
    if m.count == 0 or m.vectors.shape[1] != query.shape[0]:
        return []
    wanted = [m.codes[f] for f in file_ids if f in m.codes]
    if not wanted:
        return []
    mask = None if len(wanted) == len(m.codes) else np.isin(m.files, np.asarray(wanted, dtype=np.int32))
    if m.basis is not None and m.reduced is not None:
        # Two stages: rank every row by the projection, re-rank the best candidates exactly.
        rough = m.reduced @ (query @ m.basis)
        if mask is not None:
            rough[~mask] = -np.inf
        n_candidates = min(max(k * OVERSAMPLE, MIN_CANDIDATES), rough.shape[0])
        candidates = np.argpartition(-rough, n_candidates - 1)[:n_candidates]
        candidates = candidates[np.isfinite(rough[candidates])]
        scores = m.vectors[candidates] @ query
        rows = candidates
    else:
        scores = m.vectors @ query
        rows = np.arange(scores.shape[0])
        if mask is not None:
            rows = np.flatnonzero(mask)
            scores = scores[rows]
    k = min(k, scores.shape[0])
    if k == 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    top = top[np.argsort(-scores[top])]
    return [(int(m.ids[rows[i]]), float(scores[i])) for i in top]


def fts_terms(query: str) -> list[str]:
    words = [w for w in _WORD.findall(query.lower()) if w not in _STOPWORDS and len(w) > 1]
    return list(dict.fromkeys(words))[:16]


def _frequent_limit(total: int) -> int:
    return int(min(FREQUENT_MAX, max(FREQUENT_MIN, FREQUENT_SHARE * total)))


def informative_terms(terms: list[str], df: Mapping[str, int] | None, total: int) -> list[str]:
    """Leave out the frequent words (see FREQUENT_SHARE): they tell passages apart poorly and cost the
    most. None left: the vector list alone ranks."""
    if not df or not terms:
        return terms
    limit = _frequent_limit(total)
    return [t for t in terms if df.get(t, 0) <= limit]


def _sqlite_match(term: str) -> str:
    # A prefix match for longer words (a little stemming); short ones exactly (a prefix of 2-4 letters
    # matches too many words).
    return '"' + term.replace('"', '""') + ('"*' if len(term) >= 5 else '"')


def _pg_tsquery(term: str) -> str:
    return "'" + term.replace("'", "''").replace("\\", "") + ("':*" if len(term) >= 5 else "'")


def word_counts(session: Session, model: str, terms: Sequence[str]) -> tuple[dict[str, int], int]:
    """In how many chunks each term occurs (as the full-text query matches it) and how many chunks
    ``model`` has, counted in SQL (one statement) and only as far as :func:`informative_terms` needs: a
    term's chunks up to FREQUENT_MAX + 1, through the full-text index, over every model's chunks; the
    model's up to the count from which the limit no longer grows. No process keeps word counts."""
    dialect = session.get_bind().dialect.name
    form: Callable[[str], str] = _sqlite_match
    if dialect == "sqlite":
        count = (
            "(SELECT count(*) FROM (SELECT 1 FROM knowledge_chunks_fts "
            "WHERE knowledge_chunks_fts MATCH :q{0} LIMIT :cap))"
        )
    elif dialect == "postgresql":
        form = _pg_tsquery
        count = (
            "(SELECT count(*) FROM (SELECT 1 FROM knowledge_chunks "
            "WHERE to_tsvector('simple', text) @@ to_tsquery('simple', :q{0}) LIMIT :cap) s{0})"
        )
    else:
        count = ""
    columns = [
        "(SELECT count(*) FROM (SELECT 1 FROM knowledge_chunks WHERE embedding_model = :m LIMIT :top) t)"
    ]
    params: dict[str, object] = {
        "m": model,
        "top": int(FREQUENT_MAX / FREQUENT_SHARE) + 1,
        "cap": FREQUENT_MAX + 1,
    }
    if count:
        columns += [count.format(i) for i in range(len(terms))]
        params.update({f"q{i}": form(t) for i, t in enumerate(terms)})
    if dialect == "postgresql":
        # With a LIMIT, the planner may expect the matches early in a sequential scan and parse every row
        # (0.1-0.3 s at 10 000 chunks for a word that is not frequent after all): the GIN index it is.
        session.execute(text("SET LOCAL enable_seqscan = off"))
    try:
        row = session.execute(text("SELECT " + ", ".join(columns)), params).one()
    finally:
        if dialect == "postgresql":
            session.execute(text("SET LOCAL enable_seqscan = on"))
    total = int(row[0])
    if not count:
        return {}, total
    return {t: int(row[i + 1]) for i, t in enumerate(terms)}, total


def text_search(
    session: Session,
    model: str,
    query: str,
    file_ids: Sequence[uuid.UUID],
    k: int = CANDIDATES,
    *,
    drop_frequent: bool = False,
) -> list[int]:
    """Chunk ids matching any of the query's words among ``file_ids``' chunks, best (BM25 / ts_rank) first.
    With ``drop_frequent`` (a hybrid search: the vectors cover them), frequent words are left out."""
    terms = fts_terms(query)
    if not terms or not file_ids:
        return []
    if drop_frequent and model:
        counts, total = word_counts(session, model, terms)
        terms = informative_terms(terms, counts, total)
        if not terms:
            return []
    dialect = session.get_bind().dialect.name
    params = {"m": model, "files": list(file_ids), "k": k}
    if dialect == "sqlite":
        match = " OR ".join(_sqlite_match(t) for t in terms)
        # The best TEXT_CAP matches overall (BM25, in FTS5 itself), then those of the wanted files.
        sql = text(
            "SELECT c.id FROM (SELECT rowid AS rid, rank AS r FROM knowledge_chunks_fts "
            "WHERE knowledge_chunks_fts MATCH :q ORDER BY rank LIMIT :cap) h "
            "JOIN knowledge_chunks c ON c.id = h.rid "
            "WHERE c.embedding_model = :m AND c.file_id IN :files ORDER BY h.r LIMIT :k"
        ).bindparams(bindparam("files", expanding=True, type_=Uuid()))
        return [int(r[0]) for r in session.execute(sql, {**params, "q": match, "cap": TEXT_CAP})]
    if dialect == "postgresql":
        tsq = " | ".join(_pg_tsquery(t) for t in terms)
        # The GIN index finds the matches (the inner query has no other condition, so the planner cannot
        # prefer another index and parse every row); the first TEXT_CAP are filtered and ranked.
        sql = text(
            "WITH hit AS MATERIALIZED (SELECT id FROM knowledge_chunks "
            "WHERE to_tsvector('simple', text) @@ to_tsquery('simple', :q) LIMIT :cap) "
            "SELECT c.id FROM hit JOIN knowledge_chunks c ON c.id = hit.id "
            "WHERE c.embedding_model = :m AND c.file_id IN :files "
            "ORDER BY ts_rank(to_tsvector('simple', c.text), to_tsquery('simple', :q)) DESC, c.id LIMIT :k"
        ).bindparams(bindparam("files", expanding=True, type_=Uuid()))
        return [int(r[0]) for r in session.execute(sql, {**params, "q": tsq, "cap": TEXT_CAP})]
    like = text(
        "SELECT id FROM knowledge_chunks WHERE embedding_model = :m AND file_id IN :files "
        "AND lower(text) LIKE :pat LIMIT :k"
    ).bindparams(bindparam("files", expanding=True, type_=Uuid()))
    return [int(r[0]) for r in session.execute(like, {**params, "pat": f"%{terms[0]}%"})]


def fuse(*ranked: Sequence[int]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: each list gives ``1 / (RRF_K + rank)`` to its items; highest mean first. The
    mean (not the sum) keeps scores comparable between searches that ran a different number of lists (a
    full-text-only search beside a hybrid one)."""
    scores: dict[int, float] = {}
    for ranking in ranked:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    n = max(1, len(ranked))
    return sorted(((c, s / n) for c, s in scores.items()), key=lambda item: (-item[1], item[0]))
