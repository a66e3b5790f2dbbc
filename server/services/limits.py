"""Limits: requests and tokens per window, concurrent streams — one budget per user, whichever door (the UI
chat, ``/v1``), exact across instances with nothing but the database.

* **Kinds**: ``requests_per_minute``, ``tokens_per_minute``, ``tokens_per_day``, ``tokens_per_month``
  (windows start at the UTC minute, day and month) and ``concurrent_streams``.
* **Where they come from**: the role defaults in settings (``MODELTRAIN_LIMITS_<ROLE>_<KIND>``; the
  streams default is ``MODELTRAIN_MAX_STREAMS_PER_USER``), a per-user override and a per-key limit
  (``limit_overrides``; NULL = unlimited). A key's request is charged to the user's counters *and* the
  key's, each against its own limit, so the key's effective limit is ``min(key, user)``.
* **Counters** (``limit_counters``, one row per subject, kind and window) change only through one
  conditional ``UPDATE … SET used = used + :n WHERE … AND used + :n <= :limit`` (after an idempotent
  insert of the row when it is missing), so a limit of N admits exactly N: on PostgreSQL the row lock
  makes a concurrent UPDATE re-check the condition on the committed value; on SQLite the write
  transaction serialises them. All rows a request touches are locked in one fixed order (no deadlock).
* **Streams**: a stream slot is a live row of ``limit_reservations``. Admission locks the subject's
  ``concurrent_streams`` counter row (``SELECT … FOR UPDATE``; SQLite: the write lock), counts the live
  reservations and inserts its own in the same transaction. The owner's heartbeat renews ``expires_at``;
  a crashed instance's reservations expire (``MODELTRAIN_LIMITS_RESERVATION_SECONDS``), freeing the slots.
* **Tokens** are reserved at admission (prompt estimate + ``max_tokens`` or
  ``MODELTRAIN_LIMITS_DEFAULT_COMPLETION_TOKENS``) and settled when the reply ends, stops or fails:
  the counters charged move by (real - reserved). A reservation never settled (kill -9) keeps its
  reserved tokens in its window only — at most one window's worth of leaked budget.

Only limited kinds are counted: with no limit set a request costs one read (the overrides).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

import anyio
from sqlalchemy import Connection, Table, bindparam, case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from server.db.base import utcnow
from server.db.models.api_key import ApiKey
from server.db.models.limit import LimitCounter, LimitOverride, LimitReservation
from server.db.models.user import User
from server.errors import Forbidden, NotFound, TooManyRequests
from server.services import audit
from server.services.audit import AuditAction, AuditContext, AuditTarget

if TYPE_CHECKING:
    from server.runtime import Runtime
    from server.settings import Settings

log = logging.getLogger(__name__)

Kind = Literal[
    "requests_per_minute", "tokens_per_minute", "tokens_per_day", "tokens_per_month", "concurrent_streams"
]
KINDS: tuple[Kind, ...] = (
    "requests_per_minute",
    "tokens_per_minute",
    "tokens_per_day",
    "tokens_per_month",
    "concurrent_streams",
)
STREAMS: Kind = "concurrent_streams"
REQUESTS: Kind = "requests_per_minute"
TOKEN_KINDS: tuple[Kind, ...] = ("tokens_per_minute", "tokens_per_day", "tokens_per_month")
WINDOWED: tuple[Kind, ...] = (REQUESTS, *TOKEN_KINDS)
#: Which door a request came through: the error codes differ (``/v1`` uses OpenAI's).
Door = Literal["api", "v1"]
Source = Literal["role", "user", "key"]

_LABELS = {
    "requests_per_minute": "requests per minute",
    "tokens_per_minute": "tokens per minute",
    "tokens_per_day": "tokens per day",
    "tokens_per_month": "tokens per month",
    "concurrent_streams": "concurrent streams",
}
#: Seconds a client is told to wait when all its stream slots are taken (no window renews them).
STREAM_RETRY_AFTER = 2


def _table(model: Any) -> Table:
    return model.__table__


_OVERRIDES = _table(LimitOverride)
_COUNTERS = _table(LimitCounter)
_RESERVATIONS = _table(LimitReservation)

# The statements of the per-request path, built once (building SQLAlchemy expressions per request costs
# more than running them on SQLite).
_C, _R = _COUNTERS.c, _RESERVATIONS.c
_ROW = (_C.subject_id == bindparam("s")) & (_C.kind == bindparam("k")) & (_C.window_start == bindparam("w"))
_SELECT_OVERRIDES = select(_OVERRIDES.c.subject_id, _OVERRIDES.c.kind, _OVERRIDES.c.value).where(
    _OVERRIDES.c.subject_id.in_(bindparam("ids", expanding=True))
)
_CHARGE = (
    update(_COUNTERS)
    .where(_ROW & (_C.used + bindparam("n") <= bindparam("lim")))
    .values(used=_C.used + bindparam("n"))
    .returning(_C.used)
)
_SETTLE = (
    update(_COUNTERS)
    .where(_ROW)
    .values(used=case((_C.used + bindparam("d") < 0, 0), else_=_C.used + bindparam("d")))
)
_USED = select(_C.used).where(_ROW)
_LOCK = select(_C.used).where(_ROW).with_for_update()
_LIVE = {
    column: select(func.count())
    .select_from(_RESERVATIONS)
    .where(_R[column] == bindparam("s"), _R.expires_at > bindparam("now"))
    for column in ("user_id", "key_id")
}
_INSERT_COUNTER = {
    "postgresql": pg_insert(_COUNTERS).on_conflict_do_nothing(),
    "sqlite": sqlite_insert(_COUNTERS).on_conflict_do_nothing(),
}
_DELETE_RESERVATION = delete(_RESERVATIONS).where(_R.id == bindparam("rid"))
_INSERT_RESERVATION = _RESERVATIONS.insert()


# --- windows ---------------------------------------------------------------------------------------------


def window(kind: Kind, now: float) -> tuple[int, int]:
    """The UTC window ``kind`` counts in at ``now``: (start, end) in epoch seconds."""
    t = int(now)
    if kind in ("requests_per_minute", "tokens_per_minute"):
        start = t - t % 60
        return start, start + 60
    if kind == "tokens_per_day":
        start = t - t % 86400
        return start, start + 86400
    d = datetime.fromtimestamp(t, timezone.utc)
    first = datetime(d.year, d.month, 1, tzinfo=timezone.utc)
    following = datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=timezone.utc)
    return int(first.timestamp()), int(following.timestamp())


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


def reset_duration(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` format: ``"20ms"``, ``"1s"``, ``"6m0s"``, ``"1h2m3s"``."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


# --- where limits come from ------------------------------------------------------------------------------


def role_defaults(settings: Settings, role: str) -> dict[Kind, int | None]:
    prefix = "limits_admin_" if role == "admin" else "limits_user_"
    values: dict[Kind, int | None] = {kind: getattr(settings, prefix + kind) for kind in KINDS}
    if values[STREAMS] is None:
        values[STREAMS] = settings.max_streams_per_user
    return values


@dataclass(frozen=True)
class Limits:
    """A request's limits: the user's effective ones (with their source) and the key's own."""

    user: dict[Kind, tuple[int | None, Source]]
    #: The key's own limits (only those set; absent or None: unlimited, the user's apply).
    key: dict[Kind, int | None]

    def effective_for_key(self, kind: Kind) -> tuple[int | None, Source]:
        user_value, source = self.user[kind]
        key_value = self.key.get(kind)
        if key_value is not None and (user_value is None or key_value < user_value):
            return key_value, "key"
        return user_value, source


def _overrides(conn: Connection, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[Kind, int | None]]:
    out: dict[uuid.UUID, dict[Kind, int | None]] = {}
    rows = conn.execute(_SELECT_OVERRIDES, {"ids": ids})
    for subject_id, kind, value in rows:
        if kind in KINDS:
            out.setdefault(subject_id, {})[kind] = value
    return out


def load_limits(
    conn: Connection, settings: Settings, user_id: uuid.UUID, role: str, key_id: uuid.UUID | None
) -> Limits:
    ids = [user_id] if key_id is None else [user_id, key_id]
    found = _overrides(conn, ids)
    user: dict[Kind, tuple[int | None, Source]] = {
        k: (v, "role") for k, v in role_defaults(settings, role).items()
    }
    for kind, value in found.get(user_id, {}).items():
        user[kind] = (value, "user")
    key = found.get(key_id, {}) if key_id is not None else {}
    return Limits(user=user, key=key)


# --- admission and settlement ----------------------------------------------------------------------------


@dataclass
class Admission:
    """What one admitted request holds until it is settled."""

    user_id: uuid.UUID
    key_id: uuid.UUID | None
    tokens: int
    #: The token counters charged: (subject_id, kind, window_start).
    charges: list[tuple[uuid.UUID, str, int]] = field(default_factory=list)
    #: The ``limit_reservations`` row holding a stream slot (None: no stream limit applied).
    reservation_id: uuid.UUID | None = None
    #: OpenAI's x-ratelimit-* headers for this answer (empty without request or token limits).
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


class LimitExceeded(TooManyRequests):
    """429 with Retry-After (seconds to the window's renewal) naming the limit and when it renews."""

    def __init__(
        self,
        kind: Kind,
        limit: int,
        *,
        now: float,
        door: Door,
        scope: Literal["user", "key"],
        headers: dict[str, str] | None = None,
    ) -> None:
        whose = "this API key's" if scope == "key" else "your"
        if kind == STREAMS:
            resets_at = None
            retry = STREAM_RETRY_AFTER
            message = f"{whose} limit of {limit} concurrent streams is reached; wait for one to finish"
            code = "rate_limit_exceeded" if door == "v1" else "too_many_streams"
        else:
            _, end = window(kind, now)
            resets_at = _iso(end)
            retry = max(1, math.ceil(end - now))
            message = f"{whose} limit of {limit} {_LABELS[kind]} is reached; it renews at {resets_at}"
            if door == "v1":
                code = (
                    "insufficient_quota"
                    if kind in ("tokens_per_day", "tokens_per_month")
                    else "rate_limit_exceeded"
                )
            else:
                code = "quota_exceeded" if kind in ("tokens_per_day", "tokens_per_month") else "rate_limited"
        detail = {"limit": kind, "value": limit, "scope": scope, "resets_at": resets_at, "retry_after": retry}
        super().__init__(message, retry_after=retry, code=code, detail=detail)
        self.kind = kind
        if headers:
            self.headers.update(headers)


def _insert_ignore(conn: Connection, subject_id: uuid.UUID, kind: str, start: int) -> None:
    stmt = _INSERT_COUNTER.get(conn.dialect.name, _INSERT_COUNTER["sqlite"])
    conn.execute(stmt, {"subject_id": subject_id, "kind": kind, "window_start": start, "used": 0})


def _charge(
    conn: Connection, subject_id: uuid.UUID, kind: str, start: int, amount: int, limit: int
) -> int | None:
    """Add ``amount`` if it stays within ``limit``: the new ``used``, or None when refused."""
    params = {"s": subject_id, "k": kind, "w": start, "n": amount, "lim": limit}
    used = conn.execute(_CHARGE, params).scalar()
    if used is None:  # no row yet for this window, or over the limit: insert the row, decide again
        _insert_ignore(conn, subject_id, kind, start)
        used = conn.execute(_CHARGE, params).scalar()
    return used


def _used(conn: Connection, subject_id: uuid.UUID, kind: str, start: int) -> int:
    return int(conn.execute(_USED, {"s": subject_id, "k": kind, "w": start}).scalar() or 0)


def _live_streams(conn: Connection, column: str, subject_id: uuid.UUID, now: float) -> int:
    return int(conn.execute(_LIVE[column], {"s": subject_id, "now": int(now)}).scalar_one())


def _lock_streams(conn: Connection, subject_id: uuid.UUID) -> None:
    params = {"s": subject_id, "k": STREAMS, "w": 0}
    if conn.execute(_LOCK, params).first() is None:
        _insert_ignore(conn, subject_id, STREAMS, 0)
        conn.execute(_LOCK, params).first()


def _headers(stats: list[tuple[Kind, int, int, int]], now: float) -> dict[str, str]:
    """x-ratelimit-* from (kind, limit, used, window_end) of the counters charged: per family, the
    tightest one (least remaining)."""
    out: dict[str, str] = {}
    for family, kinds in (("requests", (REQUESTS,)), ("tokens", TOKEN_KINDS)):
        mine = [s for s in stats if s[0] in kinds]
        if not mine:
            continue
        _kind, limit, used, end = min(mine, key=lambda s: (s[1] - s[2], s[3]))
        out[f"x-ratelimit-limit-{family}"] = str(limit)
        out[f"x-ratelimit-remaining-{family}"] = str(max(0, limit - used))
        out[f"x-ratelimit-reset-{family}"] = reset_duration(end - now)
    return out


def estimate_tokens(prompt_chars: int, max_tokens: Any, settings: Settings) -> int:
    """Tokens reserved at admission: the prompt (4 characters a token) + the answer's ceiling."""
    answer = (
        max_tokens
        if isinstance(max_tokens, int) and max_tokens > 0
        else settings.limits_default_completion_tokens
    )
    return max(1, prompt_chars // 4) + answer


def admit(
    conn: Connection,
    settings: Settings,
    *,
    user_id: uuid.UUID,
    role: str,
    key_id: uuid.UUID | None,
    tokens: int,
    stream: bool,
    now: float,
    door: Door,
) -> Admission:
    """Charge one request (and ``tokens`` reserved) to every limited counter of the user and the key, and
    take a stream slot when ``stream``; raises :class:`LimitExceeded` (the caller rolls back the
    transaction, undoing what was charged)."""
    limits = load_limits(conn, settings, user_id, role, key_id)
    # (order key, subject, scope, kind, limit)
    steps: list[tuple[tuple[str, str], uuid.UUID, Literal["user", "key"], Kind, int]] = []
    for subject, scope, values in (
        (user_id, "user", {k: v for k, (v, _) in limits.user.items()}),
        (key_id, "key", limits.key),
    ):
        if subject is None:
            continue
        for kind in KINDS:
            value = values.get(kind)
            if value is None or (kind == STREAMS and not stream):
                continue
            steps.append(((str(subject), kind), subject, scope, kind, value))  # type: ignore[arg-type]
    admission = Admission(user_id=user_id, key_id=key_id, tokens=tokens)
    if not steps:
        return admission
    steps.sort(key=lambda s: s[0])  # one lock order for everyone: no deadlocks
    stats: list[tuple[Kind, int, int, int]] = []
    takes_slot = False
    for _, subject, scope, kind, limit in steps:
        if kind == STREAMS:
            _lock_streams(conn, subject)
            if _live_streams(conn, "user_id" if scope == "user" else "key_id", subject, now) >= limit:
                raise LimitExceeded(
                    kind, limit, now=now, door=door, scope=scope, headers=_headers(stats, now)
                )
            takes_slot = True
            continue
        start, end = window(kind, now)
        amount = 1 if kind == REQUESTS else tokens
        used = _charge(conn, subject, kind, start, amount, limit)
        if used is None:
            stats.append((kind, limit, _used(conn, subject, kind, start), end))
            raise LimitExceeded(kind, limit, now=now, door=door, scope=scope, headers=_headers(stats, now))
        stats.append((kind, limit, used, end))
        if kind != REQUESTS:
            admission.charges.append((subject, kind, start))
    if takes_slot:
        admission.reservation_id = uuid.uuid4()
        conn.execute(
            _INSERT_RESERVATION,
            {
                "id": admission.reservation_id,
                "user_id": user_id,
                "key_id": key_id,
                "tokens": tokens,
                "charges": [[str(s), k, w] for s, k, w in admission.charges],
                "expires_at": int(now + settings.limits_reservation_seconds),
            },
        )
    admission.headers = _headers(stats, now)
    return admission


def settle(conn: Connection, admission: Admission, real_tokens: int) -> None:
    """Move the token counters charged by (real - reserved) and free the stream slot. Idempotent."""
    if admission.settled:
        return
    admission.settled = True
    delta = real_tokens - admission.tokens
    if delta:
        for subject, kind, start in sorted(admission.charges, key=lambda ch: (str(ch[0]), ch[1])):
            conn.execute(_SETTLE, {"s": subject, "k": kind, "w": start, "d": delta})
    if admission.reservation_id is not None:
        conn.execute(_DELETE_RESERVATION, {"rid": admission.reservation_id})


def settle_now(runtime: Runtime, admission: Admission, real_tokens: int) -> None:
    """Settle in a transaction of its own (a worker thread), forgetting the live reservation."""
    if admission.settled:
        return
    try:
        with runtime.engine.begin() as conn:
            settle(conn, admission, real_tokens)
    except Exception:  # the reservation then expires; the reserved tokens stay in their window
        admission.settled = True
        log.exception("could not settle a limits reservation")
    finally:
        keeper(runtime).forget(admission)


async def settle_soon(runtime: Runtime, admission: Admission, real_tokens: int) -> None:
    """Settle from the event loop; a cancellation of the caller does not interrupt the write."""
    if admission.settled or (not admission.charges and admission.reservation_id is None):
        admission.settled = True
        return
    task = asyncio.get_running_loop().create_task(
        anyio.to_thread.run_sync(settle_now, runtime, admission, real_tokens)
    )
    keeper(runtime).track(task)
    await asyncio.shield(task)


def admit_now(
    runtime: Runtime,
    *,
    user_id: uuid.UUID,
    role: str,
    key_id: uuid.UUID | None,
    tokens: int,
    stream: bool,
    door: Door,
) -> Admission:
    """:func:`admit` in a transaction of its own (call from a worker thread)."""
    with runtime.engine.begin() as conn:
        admission = admit(
            conn,
            runtime.settings,
            user_id=user_id,
            role=role,
            key_id=key_id,
            tokens=tokens,
            stream=stream,
            now=runtime.clock(),
            door=door,
        )
    keeper(runtime).remember(admission)
    return admission


# --- the heartbeat and the sweep -------------------------------------------------------------------------


class LimitKeeper:
    """This process's live reservations: renewed every third of their lifetime; the sweep deletes expired
    reservations and counters of past windows (idempotent deletes, so every instance may run it)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.live: set[uuid.UUID] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.loop_task: asyncio.Task[None] | None = None

    def remember(self, admission: Admission) -> None:
        if admission.reservation_id is not None:
            self.live.add(admission.reservation_id)

    def forget(self, admission: Admission) -> None:
        if admission.reservation_id is not None:
            self.live.discard(admission.reservation_id)

    def track(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def beat(self) -> None:
        """Renew the live reservations and sweep (one transaction; call from a worker thread)."""
        now = self.runtime.clock()
        ttl = self.runtime.settings.limits_reservation_seconds
        r, c = _RESERVATIONS.c, _COUNTERS.c
        with self.runtime.engine.begin() as conn:
            live = sorted(self.live, key=str)
            if live:
                conn.execute(update(_RESERVATIONS).where(r.id.in_(live)).values(expires_at=int(now + ttl)))
            conn.execute(delete(_RESERVATIONS).where(r.expires_at <= int(now)))
            for kinds, keep in (
                (("requests_per_minute", "tokens_per_minute"), 120),
                (("tokens_per_day",), 2 * 86400),
                (("tokens_per_month",), 63 * 86400),
            ):
                conn.execute(delete(_COUNTERS).where(c.kind.in_(kinds), c.window_start < int(now) - keep))

    async def run(self) -> None:
        interval = self.runtime.settings.limits_reservation_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await anyio.to_thread.run_sync(self.beat)
            except Exception:
                log.warning("limits heartbeat failed", exc_info=True)


def keeper(runtime: Runtime) -> LimitKeeper:
    if runtime.limits is None:
        runtime.limits = LimitKeeper(runtime)
    return runtime.limits


async def start(runtime: Runtime) -> None:
    k = keeper(runtime)
    if k.loop_task is None:
        k.loop_task = asyncio.get_running_loop().create_task(k.run())


async def stop(runtime: Runtime) -> None:
    """After the replies have stopped: wait for their settlements, then end the heartbeat."""
    k = runtime.limits
    if k is None:
        return
    if k.tasks:
        await asyncio.gather(*list(k.tasks), return_exceptions=True)
    if k.loop_task is not None:
        k.loop_task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(k.loop_task, return_exceptions=True)
        k.loop_task = None


# --- reading and setting limits (the API) ----------------------------------------------------------------


def _status_items(
    conn: Connection, settings: Settings, user_id: uuid.UUID, role: str, key_id: uuid.UUID | None, now: float
) -> list[dict[str, Any]]:
    limits = load_limits(conn, settings, user_id, role, key_id)
    items: list[dict[str, Any]] = []
    for kind in KINDS:
        user_value, user_source = limits.user[kind]
        key_value = limits.key.get(kind) if key_id is not None else None
        value, source = limits.effective_for_key(kind) if key_id is not None else (user_value, user_source)
        item: dict[str, Any] = {
            "kind": kind,
            "limit": value,
            "source": source,
            "user_limit": user_value,
            "key_limit": key_value,
            "used": None,
            "remaining": None,
            "resets_at": None,
        }
        if kind == STREAMS:
            used_user = _live_streams(conn, "user_id", user_id, now)
            used_key = _live_streams(conn, "key_id", key_id, now) if key_id is not None else 0
            used = used_key if source == "key" else used_user
        else:
            start, end = window(kind, now)
            item["resets_at"] = _iso(end)
            used_user = _used(conn, user_id, kind, start) if user_value is not None else 0
            used_key = _used(conn, key_id, kind, start) if key_id is not None and key_value is not None else 0
            used = used_key if source == "key" else used_user
        if value is not None:
            remaining = []
            if user_value is not None:
                remaining.append(user_value - used_user)
            if key_value is not None:
                remaining.append(key_value - used_key)
            item["used"] = used
            item["remaining"] = max(0, min(remaining))
        items.append(item)
    return items


def _read_begin(session: Session) -> Connection:
    return session.connection()


def _user(session: Session, user_id: uuid.UUID) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user not found", code="user_not_found")
    return user


def _key(session: Session, actor: User, key_id: uuid.UUID) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or (key.user_id != actor.id and actor.role != "admin"):
        raise NotFound("API key not found", code="api_key_not_found")  # someone else's key: as unknown
    return key


def user_limits(session: Session, runtime: Runtime, user: User) -> dict[str, Any]:
    items = _status_items(_read_begin(session), runtime.settings, user.id, user.role, None, runtime.clock())
    return {"user_id": user.id, "key_id": None, "limits": items}


def user_limits_by_id(session: Session, runtime: Runtime, actor: User, user_id: uuid.UUID) -> dict[str, Any]:
    if actor.role != "admin" and actor.id != user_id:
        raise Forbidden("administrators only", code="admin_required")
    return user_limits(session, runtime, _user(session, user_id))


def key_limits(session: Session, runtime: Runtime, actor: User, key_id: uuid.UUID) -> dict[str, Any]:
    key = _key(session, actor, key_id)
    owner = _user(session, key.user_id)
    items = _status_items(
        _read_begin(session), runtime.settings, owner.id, owner.role, key.id, runtime.clock()
    )
    return {"user_id": owner.id, "key_id": key.id, "limits": items}


def _store(session: Session, subject_type: str, subject_id: uuid.UUID, values: dict[str, int | None]) -> None:
    conn = session.connection()
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    for kind, value in values.items():
        stmt = insert(_OVERRIDES).values(
            subject_id=subject_id, kind=kind, subject_type=subject_type, value=value, updated_at=now
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["subject_id", "kind"], set_={"value": value, "updated_at": now}
            )
        )


def _record_change(
    session: Session,
    ctx: AuditContext,
    target: AuditTarget,
    before: Mapping[Any, int | None],
    after: Mapping[str, int | Literal["default"] | None],
) -> None:
    """The "limits changed" audit entry, in the change's own transaction; nothing when nothing changed.
    ``"default"``: no override any more (the role default applies, or on a key the user's limit)."""
    changes = {
        kind: {"from": before.get(kind, "default"), "to": value}
        for kind, value in after.items()
        if before.get(kind, "default") != value
    }
    if changes:
        audit.record(session, ctx, AuditAction.LIMITS_CHANGED, target=target, details={"changes": changes})


def set_user_limits(
    session: Session,
    runtime: Runtime,
    user_id: uuid.UUID,
    values: dict[str, int | None],
    *,
    ctx: AuditContext,
) -> dict[str, Any]:
    """An administrator's overrides for ``user_id`` (the caller checked the role). The caller commits."""
    user = _user(session, user_id)
    before = _overrides(session.connection(), [user.id]).get(user.id, {})
    _store(session, "user", user.id, values)
    _record_change(session, ctx, AuditTarget("user", user.id, user.email), before, dict(values))
    return user_limits(session, runtime, user)


def reset_user_limit(
    session: Session, runtime: Runtime, user_id: uuid.UUID, kind: Kind, *, ctx: AuditContext
) -> dict[str, Any]:
    """Drop the user's override of ``kind``: the role default applies again. The caller commits."""
    user = _user(session, user_id)
    before = _overrides(session.connection(), [user.id]).get(user.id, {})
    session.connection().execute(
        delete(_OVERRIDES).where(_OVERRIDES.c.subject_id == user.id, _OVERRIDES.c.kind == kind)
    )
    _record_change(session, ctx, AuditTarget("user", user.id, user.email), before, {kind: "default"})
    return user_limits(session, runtime, user)


def set_key_limits(
    session: Session,
    runtime: Runtime,
    actor: User,
    key_id: uuid.UUID,
    values: dict[str, int | None],
    *,
    ctx: AuditContext,
) -> dict[str, Any]:
    """The key's own limits (its owner or an administrator). Stored as given, even above the user's: the
    effective limit is the smaller one."""
    key = _key(session, actor, key_id)
    before = _overrides(session.connection(), [key.id]).get(key.id, {})
    _store(session, "key", key.id, values)
    _record_change(session, ctx, AuditTarget("api_key", key.id, key.name), before, dict(values))
    return key_limits(session, runtime, actor, key_id)
