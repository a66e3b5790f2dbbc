"""Usage accounting: one record per chat or embedding request (the UI chat and ``/v1`` alike), daily
rollups, pruning, the ``GET /api/usage`` queries and the Prometheus counters.

Recording a request
-------------------
Callers build a :class:`UsageEvent` when a request has finished and hand it to the app's recorder::

    runtime.usage.record(UsageEvent(
        user_id=user.id, key_id=key.id, model="llama3.2:latest", provider_id=provider.id,
        outcome="complete",                          # "complete" | "stopped" | "error"
        prompt_tokens=12, completion_tokens=40,      # the upstream's counts, or None when it gave none
        prompt_chars=..., completion_chars=...,      # used only to estimate missing counts (chars / 4)
        duration_ms=850.0, ttft_ms=120.0, error_code=None, client_ip="192.0.2.7",
    ))

(``usage.recorder(runtime)`` returns the same object and makes one for a bare runtime.) ``record`` is
synchronous and never touches the database: it appends to an in-memory queue and bumps the Prometheus
counters. A background task (started in the lifespan) writes the queue every ``FLUSH_SECONDS`` (1 s), or
at once after ``FLUSH_EVENTS`` events, in **one transaction**: the raw rows plus an upsert that adds them
to the daily rollups. So no request pays for a database transaction of its own. Shutdown flushes what is
queued. A ``kill -9`` (or a power cut) loses at most the events of the last flush interval (about one
second of requests); a batch the database refuses is kept and retried with the next one (up to
``MAX_QUEUED`` events).

Retention: raw records ``MODELTRAIN_USAGE_RAW_DAYS``, rollups ``MODELTRAIN_USAGE_ROLLUP_DAYS``. Each
instance prunes (services/retention.py calls :func:`prune`) once at start and then daily, with indexed
range deletes in batches of ``PRUNE_BATCH`` rows (rollups one day at a time). The deletes are idempotent,
so several instances sharing a database need no lease: whichever runs second finds nothing to delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from datetime import time as dt_time
from typing import TYPE_CHECKING, Any, Literal

from anyio import to_thread
from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.orm import Session

from server import aio
from server.db.base import utcnow
from server.db.models import ApiKey, User
from server.db.models.usage import NO_KEY, UsageRecord, UsageRollup
from server.errors import Forbidden, InvalidInput

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
FLUSH_EVENTS = 256
#: Events kept in memory while the database refuses them; older ones are dropped beyond this.
MAX_QUEUED = 50_000
PRUNE_BATCH = 5_000
#: At most this many raw records or rollup rows in one API answer.
MAX_ITEMS = 10_000

Outcome = Literal["complete", "stopped", "error"]
OUTCOMES: tuple[str, ...] = ("complete", "stopped", "error")


@dataclass(frozen=True)
class UsageEvent:
    """One finished chat or embedding request (see the module docstring for how to record one).

    ``prompt_tokens`` / ``completion_tokens`` are the upstream's counts; ``None`` means the upstream gave
    none, and the count is then estimated from ``prompt_chars`` / ``completion_chars`` (4 characters a
    token) and the record is marked ``estimated``. ``key_id`` is the API key of a ``/v1`` request (None
    for the UI). ``model`` is the id as the caller named it."""

    user_id: uuid.UUID
    model: str
    outcome: Outcome
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_chars: int = 0
    completion_chars: int = 0
    key_id: uuid.UUID | None = None
    provider_id: uuid.UUID | None = None
    duration_ms: float = 0.0
    ttft_ms: float | None = None
    error_code: str | None = None
    client_ip: str | None = None
    created_at: datetime = field(default_factory=utcnow)


def estimate_tokens(chars: int) -> int:
    return math.ceil(max(0, chars) / 4)


def _row(event: UsageEvent) -> dict[str, Any]:
    estimated = event.prompt_tokens is None or event.completion_tokens is None
    prompt = event.prompt_tokens if event.prompt_tokens is not None else estimate_tokens(event.prompt_chars)
    completion = (
        event.completion_tokens
        if event.completion_tokens is not None
        else estimate_tokens(event.completion_chars)
    )
    outcome = event.outcome if event.outcome in OUTCOMES else "error"
    return {
        "id": uuid.uuid4(),
        "created_at": event.created_at,
        "user_id": event.user_id,
        "key_id": event.key_id,
        "model": event.model[:255],
        "provider_id": event.provider_id,
        "prompt_tokens": max(0, int(prompt)),
        "completion_tokens": max(0, int(completion)),
        "estimated": estimated,
        "duration_ms": max(0, round(event.duration_ms)),
        "ttft_ms": None if event.ttft_ms is None else max(0, round(event.ttft_ms)),
        "outcome": outcome,
        "error_code": (event.error_code or None) and str(event.error_code)[:64],
        "client_ip": (event.client_ip or None) and str(event.client_ip)[:64],
    }


_SUMS = ("requests", "prompt_tokens", "completion_tokens", "errors", "stopped", "estimated", "duration_ms")


def _rollup_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[date, uuid.UUID, uuid.UUID, str], dict[str, Any]] = {}
    for r in rows:
        day = r["created_at"].astimezone(timezone.utc).date()
        key = (day, r["user_id"], r["key_id"] or NO_KEY, r["model"])
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"day": key[0], "user_id": key[1], "key_id": key[2], "model": key[3]}
            g.update(dict.fromkeys(_SUMS, 0))
        g["requests"] += 1
        g["prompt_tokens"] += r["prompt_tokens"]
        g["completion_tokens"] += r["completion_tokens"]
        g["errors"] += r["outcome"] == "error"
        g["stopped"] += r["outcome"] == "stopped"
        g["estimated"] += bool(r["estimated"])
        g["duration_ms"] += r["duration_ms"]
    return list(groups.values())


def _table(model: type[UsageRecord] | type[UsageRollup]) -> Table:
    return model.__table__  # type: ignore[return-value]  # a mapped class's Core table


def write_batch(runtime: Runtime, rows: list[dict[str, Any]]) -> None:
    """The raw rows and their rollup increments, in one transaction."""
    rollups = _table(UsageRollup)
    upsert: Any
    if runtime.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        upsert = postgresql.insert(rollups)
    else:
        from sqlalchemy.dialects import sqlite

        upsert = sqlite.insert(rollups)
    upsert = upsert.on_conflict_do_update(
        index_elements=["day", "user_id", "key_id", "model"],
        set_={name: rollups.c[name] + upsert.excluded[name] for name in _SUMS},
    )
    with runtime.engine.begin() as conn:
        conn.execute(insert(_table(UsageRecord)), rows)
        conn.execute(upsert, _rollup_rows(rows))


def prune(runtime: Runtime, now: datetime | None = None) -> tuple[int, int]:
    """Delete raw records older than ``usage_raw_days`` and rollups older than ``usage_rollup_days``, in
    small indexed batches (each its own short transaction). Idempotent. Returns (raw, rollups) deleted."""
    now = now or utcnow()
    settings = runtime.settings
    raw_cutoff = now - timedelta(days=settings.usage_raw_days)
    day_cutoff = (now - timedelta(days=settings.usage_rollup_days)).astimezone(timezone.utc).date()
    records, rollups = _table(UsageRecord), _table(UsageRollup)
    raw_deleted = rollup_deleted = 0
    while True:
        with runtime.engine.begin() as conn:
            ids = (
                select(records.c.id)
                .where(records.c.created_at < raw_cutoff)
                .limit(PRUNE_BATCH)
                .scalar_subquery()
            )
            n = conn.execute(delete(records).where(records.c.id.in_(ids))).rowcount or 0
        raw_deleted += n
        if n < PRUNE_BATCH:
            break
    while True:
        with runtime.engine.begin() as conn:
            oldest = conn.execute(select(func.min(rollups.c.day))).scalar()
            if oldest is None or oldest >= day_cutoff:
                break
            rollup_deleted += conn.execute(delete(rollups).where(rollups.c.day == oldest)).rowcount or 0
    if raw_deleted or rollup_deleted:
        log.info("usage pruned: %d raw records, %d rollup rows", raw_deleted, rollup_deleted)
    return raw_deleted, rollup_deleted


class UsageRecorder:
    """Queues :class:`UsageEvent` s and writes them in batches (see the module docstring)."""

    def __init__(
        self, runtime: Runtime, *, flush_seconds: float = FLUSH_SECONDS, flush_events: int = FLUSH_EVENTS
    ) -> None:
        self.runtime = runtime
        self.flush_seconds = flush_seconds
        self.flush_events = flush_events
        self._queue: deque[dict[str, Any]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        #: Batches written (one transaction each): what the tests count.
        self.flushes = 0
        #: Prometheus counters of this process: (model, outcome) -> requests / prompt / completion tokens.
        self.requests: dict[tuple[str, str], int] = {}
        self.prompt_tokens: dict[tuple[str, str], int] = {}
        self.completion_tokens: dict[tuple[str, str], int] = {}

    @property
    def pending(self) -> int:
        return len(self._queue)

    def record(self, event: UsageEvent) -> None:
        """Queue one finished request (no I/O; call it from the event loop or any thread)."""
        row = _row(event)
        self._queue.append(row)
        label = (row["model"], row["outcome"])
        self.requests[label] = self.requests.get(label, 0) + 1
        self.prompt_tokens[label] = self.prompt_tokens.get(label, 0) + row["prompt_tokens"]
        self.completion_tokens[label] = self.completion_tokens.get(label, 0) + row["completion_tokens"]
        if len(self._queue) >= self.flush_events and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # called from a thread: the timer flushes it
                asyncio.get_running_loop()
                self._wake.set()

    def flush_now(self) -> int:
        """Write everything queued, in one transaction (blocking; a worker thread or a test calls it).
        Returns how many records were written."""
        rows: list[dict[str, Any]] = []
        with contextlib.suppress(IndexError):  # popleft is atomic: a row is taken by one flush only
            while len(rows) < MAX_QUEUED:
                rows.append(self._queue.popleft())
        if not rows:
            return 0
        try:
            write_batch(self.runtime, rows)
        except Exception:
            log.warning("could not write %d usage records; keeping them for the next flush", len(rows))
            self._queue.extendleft(reversed(rows))
            while len(self._queue) > MAX_QUEUED:
                self._queue.popleft()
            raise
        self.flushes += 1
        return len(rows)

    async def flush(self) -> int:
        if not self._queue:
            return 0
        return await to_thread.run_sync(self.flush_now)

    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.flush()
        except Exception:
            log.exception("could not write the last usage records at shutdown")

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(*aio.TIMEOUT_ERRORS):  # not wait_for: it can swallow a cancellation
                async with aio.timeout(self.flush_seconds):
                    await self._wake.wait()
            self._wake.clear()
            with contextlib.suppress(Exception):  # logged in flush_now; retried next time
                await self.flush()


def recorder(runtime: Runtime) -> UsageRecorder:
    """The app's recorder (the lifespan starts it; a bare runtime in tests gets an unstarted one)."""
    if runtime.usage is None:
        runtime.usage = UsageRecorder(runtime)
    return runtime.usage


async def start(runtime: Runtime) -> UsageRecorder:
    rec = recorder(runtime)
    rec.start()
    return rec


async def stop(runtime: Runtime) -> None:
    if runtime.usage is not None:
        await runtime.usage.stop()


# --- Prometheus -----------------------------------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(runtime: Runtime) -> str:
    """The usage counters of this process, in Prometheus text format."""
    rec = recorder(runtime)
    lines = [
        "# HELP modeltrain_usage_requests_total Chat and embedding requests since start, "
        "by model and outcome.",
        "# TYPE modeltrain_usage_requests_total counter",
    ]
    for (model, outcome), n in sorted(rec.requests.items()):
        lines.append(f'modeltrain_usage_requests_total{{model="{_label(model)}",outcome="{outcome}"}} {n}')
    lines += [
        "# HELP modeltrain_usage_tokens_total Tokens since start, by model, outcome and type "
        "(prompt, completion).",
        "# TYPE modeltrain_usage_tokens_total counter",
    ]
    for kind, counts in (("prompt", rec.prompt_tokens), ("completion", rec.completion_tokens)):
        for (model, outcome), n in sorted(counts.items()):
            labels = f'model="{_label(model)}",outcome="{outcome}",type="{kind}"'
            lines.append(f"modeltrain_usage_tokens_total{{{labels}}} {n}")
    return "\n".join(lines) + "\n"


# --- queries (GET /api/usage) ---------------------------------------------------------------------------


@dataclass
class UsageQuery:
    granularity: Literal["raw", "day"] = "day"
    day_from: date | None = None
    day_to: date | None = None
    user_id: uuid.UUID | None = None
    key_id: uuid.UUID | None = None
    model: str | None = None


def _range(q: UsageQuery) -> tuple[date, date]:
    today = utcnow().date()
    day_to = q.day_to or today
    day_from = q.day_from or (
        day_to - timedelta(days=29) if day_to > date.min + timedelta(days=29) else date.min
    )
    if day_from > day_to:
        raise InvalidInput("'from' is after 'to'", code="usage_range_invalid")
    return day_from, day_to


def get_usage(session: Session, user: User, q: UsageQuery) -> dict[str, Any]:
    """:func:`list_usage` with the answered range and the names of the users and keys it mentions."""
    items = list_usage(session, user, q)
    day_from, day_to = _range(q)
    user_ids = {i["user_id"] for i in items}
    key_ids = {i["key_id"] for i in items if i["key_id"] is not None}
    users = session.scalars(select(User).where(User.id.in_(user_ids))).all() if user_ids else []
    keys = session.scalars(select(ApiKey).where(ApiKey.id.in_(key_ids))).all() if key_ids else []
    return {
        "items": items,
        "granularity": q.granularity,
        "day_from": day_from,
        "day_to": day_to,
        "users": [{"id": u.id, "email": u.email, "display_name": u.display_name} for u in users],
        "keys": [{"id": k.id, "name": k.name, "prefix": k.prefix} for k in keys],
    }


def list_usage(session: Session, user: User, q: UsageQuery) -> list[dict[str, Any]]:
    """Raw records or daily rollups in the day range (UTC days, both ends included). A user sees only
    their own usage (a ``user_id`` filter naming someone else is refused); an admin everyone's."""
    if user.role != "admin":
        if q.user_id is not None and q.user_id != user.id:
            raise Forbidden("only administrators may see other users' usage", code="usage_forbidden")
        q.user_id = user.id
    day_from, day_to = _range(q)
    if q.granularity == "raw":
        r = UsageRecord
        start = datetime.combine(day_from, dt_time(0), tzinfo=timezone.utc)
        stmt = select(r).where(r.created_at >= start)
        if day_to < date.max:  # the last day included (9999-12-31 has no next day to stop before)
            end = datetime.combine(day_to + timedelta(days=1), dt_time(0), tzinfo=timezone.utc)
            stmt = stmt.where(r.created_at < end)
        if q.user_id is not None:
            stmt = stmt.where(r.user_id == q.user_id)
        if q.key_id is not None:
            stmt = stmt.where(r.key_id == q.key_id)
        if q.model:
            stmt = stmt.where(r.model == q.model)
        rows = session.scalars(stmt.order_by(r.created_at.desc()).limit(MAX_ITEMS)).all()
        return [
            {
                "id": row.id,
                "created_at": row.created_at,
                "user_id": row.user_id,
                "key_id": row.key_id,
                "model": row.model,
                "provider_id": row.provider_id,
                "prompt_tokens": row.prompt_tokens,
                "completion_tokens": row.completion_tokens,
                "estimated": row.estimated,
                "duration_ms": row.duration_ms,
                "ttft_ms": row.ttft_ms,
                "outcome": row.outcome,
                "error_code": row.error_code,
                "client_ip": row.client_ip,
            }
            for row in rows
        ]
    u = UsageRollup
    stmt2 = select(u).where(u.day >= day_from, u.day <= day_to)
    if q.user_id is not None:
        stmt2 = stmt2.where(u.user_id == q.user_id)
    if q.key_id is not None:
        stmt2 = stmt2.where(u.key_id == q.key_id)
    if q.model:
        stmt2 = stmt2.where(u.model == q.model)
    rollups = session.scalars(stmt2.order_by(u.day, u.model).limit(MAX_ITEMS)).all()
    return [
        {
            "day": row.day,
            "user_id": row.user_id,
            "key_id": None if row.key_id == NO_KEY else row.key_id,
            "model": row.model,
            "requests": row.requests,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "errors": row.errors,
            "stopped": row.stopped,
            "estimated": row.estimated,
            "duration_ms": row.duration_ms,
        }
        for row in rollups
    ]


RAW_COLUMNS = (
    "created_at",
    "user_id",
    "key_id",
    "model",
    "provider_id",
    "prompt_tokens",
    "completion_tokens",
    "estimated",
    "duration_ms",
    "ttft_ms",
    "outcome",
    "error_code",
    "client_ip",
)
DAY_COLUMNS = (
    "day",
    "user_id",
    "key_id",
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "errors",
    "stopped",
    "estimated",
    "duration_ms",
)


def to_csv(items: list[dict[str, Any]], granularity: str) -> str:
    columns = RAW_COLUMNS if granularity == "raw" else DAY_COLUMNS
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for item in items:
        row = []
        for c in columns:
            v = item.get(c)
            if isinstance(v, datetime):
                v = v.isoformat()
            elif v is None:
                v = ""
            text = str(v)
            if text[:1] in ("=", "+", "-", "@"):  # a spreadsheet must not read a model name as a formula
                text = "'" + text
            row.append(text)
        writer.writerow(row)
    return out.getvalue()
