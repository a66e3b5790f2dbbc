"""Indexing jobs. The state of each job is a ``knowledge_documents`` row, so several workers (gunicorn) share
the work: a worker claims a document with a conditional UPDATE (``queued`` -> ``indexing``), cuts the file's
text into chunks, embeds them in batches, and after every batch writes the progress with another conditional
UPDATE (``WHERE status = 'indexing'``): a cancel (which sets ``cancelled``) makes that UPDATE match nothing,
and the worker stops there. A claim not refreshed for :data:`STALE_SECONDS` (a worker that died) is taken
over."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import numpy as np
from anyio import to_thread
from sqlalchemy import and_, delete, or_, select, update

from server.db.base import utcnow
from server.db.models import File, KnowledgeChunk, KnowledgeDocument
from server.db.session import session_scope
from server.errors import DomainError
from server.runtime import Runtime
from server.services import files as files_service
from server.services.knowledge import embedding, index
from server.services.knowledge.chunking import ChunkSpan, chunk_text

log = logging.getLogger(__name__)

#: A claim whose progress was not written for this long belongs to a dead worker and may be taken over.
STALE_SECONDS = 120.0


@dataclass
class IndexStats:
    chunks: int = 0
    chars: int = 0
    embed_seconds: float = 0.0


def _read_text(runtime: Runtime, file: File) -> tuple[str, list[tuple[int, int, int]]]:
    """The document's text (the files service extracts and caches it) and its page spans."""
    text = files_service.read_text(runtime, file)
    pages = [(p.page, p.start, p.end) for p in files_service.read_pages(runtime, file)]
    return text, pages


def _claim(runtime: Runtime, doc_id: uuid.UUID) -> bool:
    now = utcnow()
    stale = now - timedelta(seconds=STALE_SECONDS)
    with session_scope(runtime.session_factory) as session:
        result = session.execute(
            update(KnowledgeDocument)
            .where(
                KnowledgeDocument.id == doc_id,
                or_(
                    KnowledgeDocument.status == "queued",
                    and_(KnowledgeDocument.status == "indexing", KnowledgeDocument.claimed_at < stale),
                ),
            )
            .values(status="indexing", claimed_at=now, progress=0.0, error=None)
            .execution_options(synchronize_session=False)
        )
        return getattr(result, "rowcount", 0) == 1


def _set(runtime: Runtime, doc_id: uuid.UUID, **values: object) -> bool:
    """Update a document being indexed; False when it is no longer ``indexing`` (cancelled)."""
    with session_scope(runtime.session_factory) as session:
        result = session.execute(
            update(KnowledgeDocument)
            .where(KnowledgeDocument.id == doc_id, KnowledgeDocument.status == "indexing")
            .values(claimed_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        )
        return getattr(result, "rowcount", 0) == 1


@dataclass
class _Plan:
    file_id: uuid.UUID
    model: str
    owner_id: uuid.UUID
    chunks: list[ChunkSpan]
    #: Another document already holds ready chunks for this file and model: nothing to compute.
    reuse: int | None = None
    #: Another worker is indexing this file with this model right now: try again later.
    busy: bool = False


def _plan(runtime: Runtime, doc_id: uuid.UUID) -> _Plan | None:
    s = runtime.settings
    with session_scope(runtime.session_factory) as session:
        doc = session.get(KnowledgeDocument, doc_id)
        if doc is None:
            return None
        file = session.get(File, doc.file_id)
        if file is None:
            return None
        plan = _Plan(doc.file_id, doc.embedding_model, file.owner_id, [])
        others = session.execute(
            select(
                KnowledgeDocument.status, KnowledgeDocument.chunk_count, KnowledgeDocument.claimed_at
            ).where(
                KnowledgeDocument.file_id == doc.file_id,
                KnowledgeDocument.embedding_model == doc.embedding_model,
                KnowledgeDocument.id != doc.id,
                KnowledgeDocument.status.in_(("ready", "indexing")),
            )
        ).all()
        stale = utcnow() - timedelta(seconds=STALE_SECONDS)
        ready = [o for o in others if o.status == "ready"]
        if ready:
            plan.reuse = ready[0].chunk_count
            return plan
        if any(o.status == "indexing" and o.claimed_at is not None and o.claimed_at >= stale for o in others):
            plan.busy = True
            return plan
        # Leftovers of a cancelled or failed run.
        session.execute(
            delete(KnowledgeChunk).where(
                KnowledgeChunk.file_id == doc.file_id, KnowledgeChunk.embedding_model == doc.embedding_model
            )
        )
        text, pages = _read_text(runtime, file)
    plan.chunks = chunk_text(
        text, size=s.knowledge_chunk_chars, overlap=s.knowledge_chunk_overlap, pages=pages
    )
    return plan


def _insert(runtime: Runtime, plan: _Plan, batch: list[ChunkSpan], vectors: np.ndarray | None) -> None:
    with session_scope(runtime.session_factory) as session:
        rows = [
            KnowledgeChunk(
                file_id=plan.file_id,
                embedding_model=plan.model,
                ordinal=c.ordinal,
                text=c.text,
                page=c.page,
                char_start=c.start,
                char_end=c.end,
                tokens=c.tokens,
                embedding=None if vectors is None else embedding.to_blob(vectors[i]),
            )
            for i, c in enumerate(batch)
        ]
        session.add_all(rows)
        session.flush()
        if vectors is not None:
            index.store_vectors(runtime, session, [(row.id, vectors[i]) for i, row in enumerate(rows)])


def _discard(runtime: Runtime, plan: _Plan) -> None:
    with session_scope(runtime.session_factory) as session:
        session.execute(
            delete(KnowledgeChunk).where(
                KnowledgeChunk.file_id == plan.file_id, KnowledgeChunk.embedding_model == plan.model
            )
        )


async def index_document(runtime: Runtime, doc_id: uuid.UUID, stats: IndexStats | None = None) -> str:
    """Claim and index one document; returns its status afterwards (``busy``: another worker has the file)."""
    if not await to_thread.run_sync(_claim, runtime, doc_id):
        return "not_claimed"
    stats = stats if stats is not None else IndexStats()
    plan: _Plan | None = None
    try:
        plan = await to_thread.run_sync(_plan, runtime, doc_id)
        if plan is None:
            return "gone"
        if plan.busy:
            await to_thread.run_sync(
                lambda: _set(runtime, doc_id, status="queued", claimed_at=None, progress=0.0)
            )
            return "busy"
        if plan.reuse is not None:
            await to_thread.run_sync(
                lambda: _set(runtime, doc_id, status="ready", progress=1.0, chunk_count=plan.reuse)
            )
            return "ready"
        batch_size = runtime.settings.knowledge_embed_batch
        total = len(plan.chunks)
        timer = embedding.EmbedTimer()
        for start in range(0, total, batch_size):
            batch = plan.chunks[start : start + batch_size]
            vectors = None
            if plan.model:
                vectors = await embedding.embed_texts(
                    runtime, plan.model, [c.text for c in batch], user_id=plan.owner_id, timer=timer
                )
            await to_thread.run_sync(_insert, runtime, plan, batch, vectors)
            stats.chunks += len(batch)
            stats.chars += sum(len(c.text) for c in batch)
            progress = min((start + len(batch)) / total, 0.999)
            if not await to_thread.run_sync(partial(_set, runtime, doc_id, progress=progress)):
                await to_thread.run_sync(_discard, runtime, plan)
                return "cancelled"
        stats.embed_seconds += timer.seconds
        ok = await to_thread.run_sync(
            lambda: _set(runtime, doc_id, status="ready", progress=1.0, chunk_count=total)
        )
        if not ok:
            await to_thread.run_sync(_discard, runtime, plan)
            return "cancelled"
        return "ready"
    except DomainError as exc:
        message = exc.message
    except Exception as exc:  # the job records what failed; the worker lives on
        log.exception("indexing a knowledge document failed")
        message = f"indexing failed ({type(exc).__name__})"
    await to_thread.run_sync(lambda: _set(runtime, doc_id, status="error", error=message[:500]))
    if plan is not None:
        await to_thread.run_sync(_discard, runtime, plan)
    return "error"


def _queued(runtime: Runtime, skip: set[uuid.UUID]) -> list[uuid.UUID]:
    stale = utcnow() - timedelta(seconds=STALE_SECONDS)
    with session_scope(runtime.session_factory) as session:
        ids = session.scalars(
            select(KnowledgeDocument.id)
            .where(
                or_(
                    KnowledgeDocument.status == "queued",
                    and_(KnowledgeDocument.status == "indexing", KnowledgeDocument.claimed_at < stale),
                )
            )
            .order_by(KnowledgeDocument.created_at)
            .limit(50)
        ).all()
    return [i for i in ids if i not in skip]


async def run_pending(runtime: Runtime, stats: IndexStats | None = None) -> int:
    """Index queued documents until none is left (or only ones another worker holds); how many were done."""
    done = 0
    busy: set[uuid.UUID] = set()
    while True:
        ids = await to_thread.run_sync(_queued, runtime, busy)
        if not ids:
            return done
        for doc_id in ids:
            outcome = await index_document(runtime, doc_id, stats)
            if outcome == "busy":
                busy.add(doc_id)
            elif outcome in ("ready", "error", "cancelled"):
                done += 1


class IndexerLoop:
    """This process's indexing loop (``runtime.knowledge_indexer``): one task at a time, which runs until
    no claimable work is left; a kick while it runs makes it look once more before it ends."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.task: asyncio.Task[int] | None = None
        self.again = False

    async def _loop(self) -> int:
        total = 0
        while True:
            self.again = False
            total += await run_pending(self.runtime)
            if not self.again:
                return total

    def kick(self) -> asyncio.Task[int]:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._loop(), name="knowledge-indexer")
        else:
            self.again = True
        return self.task

    async def stop(self) -> None:
        """Stop at once: a document being indexed stays claimed and is taken over once its claim is
        stale (by this process after a restart, or by another instance)."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def loop_of(runtime: Runtime) -> IndexerLoop:
    if runtime.knowledge_indexer is None:
        runtime.knowledge_indexer = IndexerLoop(runtime)
    return runtime.knowledge_indexer


def kick(runtime: Runtime) -> asyncio.Task[int]:
    """Start this process's indexing loop, or make the running one look for work once more."""
    return loop_of(runtime).kick()


async def start(runtime: Runtime) -> None:
    """At start-up: resume what is queued (documents added before a restart, claims left by a process
    that is gone)."""
    kick(runtime)


async def stop(runtime: Runtime) -> None:
    if runtime.knowledge_indexer is not None:
        await runtime.knowledge_indexer.stop()


async def wait_idle(runtime: Runtime) -> None:
    """Wait for this process's indexing loop (tests and the bench)."""
    task = loop_of(runtime).task
    if task is not None:
        await task
