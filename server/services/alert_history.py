"""The alert notifier: the shared alert history and the delivery of alerts through the outbound channels.

Every instance (each gunicorn worker, each host) runs one :class:`AlertNotifier`. Once a second it

1. judges the error-log surge (services/log_surge.py) from this process's log counter;
2. drains its :class:`AlertCenter`'s transitions (raised, changed, resolved) and writes each as one
   ``alert_events`` row labelled with this instance (``cluster.instance_name``): one alert per condition
   per instance; a row written twice is a no-op (unique instance/key/state/time), and rows that could not be
   written (database down) are kept and written on a later tick, never dropped;
3. queues one ``alert_deliveries`` row per channel that wants the change (minimum level, quiet hours hold
   back warnings, a repeat interval against flapping);
4. sends the due deliveries it can claim, retrying a failure with exponential back-off
   (``alert_retry_seconds`` doubled per attempt, at most an hour, ``alert_delivery_attempts`` in all).

Why the queue is in the database and not in memory: an alert that could not be sent survives a restart
or a crash of the instance that raised it, any instance may retry it (a claim is one conditional UPDATE,
so two never send the same row), and what is waiting or has failed is visible to the System page of every
instance. Daily: certificate expiry (services/certificates.py) and pruning (``MODELTRAIN_ALERT_DAYS``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone

import httpx
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import aio, log_setup
from server.db.models import AlertChannel, AlertDelivery, AlertEvent
from server.db.session import session_scope
from server.runtime import Runtime
from server.schemas.alert import AlertEventPage, AlertEventRead
from server.security.secret_store import get_secret_store
from server.services import alert_channels, certificates, cluster, log_surge
from server.services.alert_channels import LEVEL_RANK, DeliveryError, Notice, Target
from server.services.alerts import AlertCenter, AlertTransition, get_alert_center

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
DAILY = timedelta(hours=24)
CLAIM_LEASE = timedelta(minutes=2)
MAX_BACKOFF = 3600.0
BATCH = 20


def _value(value: float | str | None) -> str | None:
    if value is None:
        return None
    return (format(value, "g") if isinstance(value, float) else str(value))[:64]


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


# --- history ---------------------------------------------------------------------------------------------


def store_transitions(
    session: Session, transitions: list[AlertTransition], instance: str
) -> list[AlertEvent]:
    """Write each transition once (a duplicate is skipped); returns the rows written."""
    written = []
    for t in transitions:
        event = AlertEvent(
            id=uuid.uuid4(),
            at=t.at,
            since=t.since,
            key=t.key[:200],
            metric=t.metric[:64],
            state=t.state,
            level=t.level,
            message=t.message[:1000],
            value=_value(t.value),
            instance=instance[:255],
        )
        try:
            with session.begin_nested():
                session.add(event)
                session.flush()
        except IntegrityError:
            continue
        written.append(event)
    return written


def list_events(
    session: Session,
    *,
    level: str | None = None,
    state: str | None = None,
    key: str | None = None,
    instance: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = 1,
    size: int = 50,
) -> AlertEventPage:
    query = select(AlertEvent)
    if level:
        query = query.where(AlertEvent.level == level)
    if state:
        query = query.where(AlertEvent.state == state)
    if key:
        query = query.where(AlertEvent.key.contains(key, autoescape=True))
    if instance:
        query = query.where(AlertEvent.instance == instance)
    if since:
        query = query.where(AlertEvent.at >= since)
    if until:
        query = query.where(AlertEvent.at < until)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(AlertEvent.at.desc(), AlertEvent.id).offset((page - 1) * size).limit(size)
    )
    instances = list(session.scalars(select(AlertEvent.instance).distinct().order_by(AlertEvent.instance)))
    return AlertEventPage(
        items=[AlertEventRead.model_validate(r, from_attributes=True) for r in rows],
        total=total,
        page=page,
        size=size,
        instances=instances,
    )


def prune(session: Session, days: int, now: datetime) -> int:
    cutoff = now - timedelta(days=days)
    session.execute(delete(AlertDelivery).where(AlertDelivery.created_at < cutoff))
    result = session.execute(delete(AlertEvent).where(AlertEvent.at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


# --- which channels want an event ------------------------------------------------------------------------


def in_quiet_hours(channel: AlertChannel, now: datetime) -> bool:
    if not channel.quiet_start or not channel.quiet_end:
        return False
    local = now.astimezone().time()
    start, end = time.fromisoformat(channel.quiet_start), time.fromisoformat(channel.quiet_end)
    if start <= end:
        return start <= local < end
    return local >= start or local < end  # over midnight, e.g. 22:00-07:00


def _decide(session: Session, channel: AlertChannel, event: AlertEvent, now: datetime) -> str | None:
    """pending (send), suppressed (recorded, not sent) or None (not this channel's business)."""
    previous = select(AlertDelivery.status, AlertDelivery.state).where(
        AlertDelivery.channel_id == channel.id,
        AlertDelivery.key == event.key,
        AlertDelivery.instance == event.instance,
        AlertDelivery.status != "suppressed",
    )
    if event.state == "resolved":
        # Only tell a channel of the end of something it was told about.
        told = session.scalar(
            previous.with_only_columns(func.count()).where(
                AlertDelivery.state != "resolved", AlertDelivery.created_at >= event.since
            )
        )
        return "pending" if told else None
    if LEVEL_RANK.get(event.level, 0) < LEVEL_RANK.get(channel.min_level, 1):
        return None
    if event.level != "alert" and in_quiet_hours(channel, now):
        return "suppressed"  # quiet hours hold back warnings; alerts still go out
    if channel.repeat_minutes > 0 and event.state == "raised":
        recent = session.scalar(
            previous.with_only_columns(func.count()).where(
                AlertDelivery.state != "resolved",
                AlertDelivery.created_at >= now - timedelta(minutes=channel.repeat_minutes),
            )
        )
        if recent:
            return "suppressed"  # a flapping condition: told within the repeat interval
    return "pending"


def enqueue(session: Session, events: list[AlertEvent], now: datetime) -> int:
    channels = list(session.scalars(select(AlertChannel).where(AlertChannel.enabled.is_(True))))
    queued = 0
    for event in events:
        for channel in channels:
            status = _decide(session, channel, event, now)
            if status is None:
                continue
            session.add(
                AlertDelivery(
                    id=uuid.uuid4(),
                    channel_id=channel.id,
                    event_id=event.id,
                    key=event.key,
                    instance=event.instance,
                    state=event.state,
                    status=status,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
            session.flush()  # the next event's decision sees this one
            queued += status == "pending"
    return queued


# --- sending the queue -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    delivery_id: uuid.UUID
    attempts: int
    target: Target
    notice: Notice


def claim_due(runtime: Runtime, now: datetime, limit: int = BATCH) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries (one conditional UPDATE each: no two instances send a row)."""
    secrets = get_secret_store(runtime)
    claimed: list[Claimed] = []
    with session_scope(runtime.session_factory) as session:
        rows = session.execute(
            select(AlertDelivery, AlertEvent, AlertChannel)
            .join(AlertEvent, AlertEvent.id == AlertDelivery.event_id)
            .join(AlertChannel, AlertChannel.id == AlertDelivery.channel_id)
            .where(AlertDelivery.status == "pending", AlertDelivery.next_attempt_at <= now)
            .order_by(AlertDelivery.next_attempt_at)
            .limit(limit)
        ).all()
        for delivery, event, channel in rows:
            won = session.execute(
                update(AlertDelivery)
                .where(
                    AlertDelivery.id == delivery.id,
                    AlertDelivery.status == "pending",
                    AlertDelivery.next_attempt_at == delivery.next_attempt_at,
                )
                .values(next_attempt_at=now + CLAIM_LEASE)
                .execution_options(synchronize_session=False)
            )
            if getattr(won, "rowcount", 0) != 1:
                continue
            notice = Notice(
                key=event.key,
                state=event.state,
                level=event.level,
                message=event.message,
                value=event.value,
                instance=event.instance,
                at=event.at,
                since=event.since,
            )
            claimed.append(
                Claimed(delivery.id, delivery.attempts, alert_channels.target_of(channel, secrets), notice)
            )
    return claimed


def finish(runtime: Runtime, item: Claimed, error: str | None, now: datetime) -> str:
    """Record the outcome of one attempt; returns the delivery's new status."""
    settings = runtime.settings
    attempts = item.attempts + 1
    with session_scope(runtime.session_factory) as session:
        delivery = session.get(AlertDelivery, item.delivery_id)
        channel = session.get(AlertChannel, item.target.channel_id)
        if delivery is None:
            return "gone"
        delivery.attempts = attempts
        if error is None:
            delivery.status, delivery.sent_at, delivery.last_error = "sent", now, None
        else:
            delivery.last_error = error[:500]
            if attempts >= settings.alert_delivery_attempts:
                delivery.status = "failed"
            else:
                backoff = min(MAX_BACKOFF, settings.alert_retry_seconds * 2 ** (attempts - 1))
                delivery.next_attempt_at = now + timedelta(seconds=backoff)
        if channel is not None:
            record_attempt(channel, error, now)
        return delivery.status


def record_attempt(channel: AlertChannel, error: str | None, now: datetime) -> None:
    channel.last_attempt_at = now
    if error is None:
        channel.last_status, channel.last_error, channel.last_success_at = "ok", None, now
    else:
        channel.last_status, channel.last_error = "failing", error[:500]


def channel_alert_key(channel_id: uuid.UUID) -> str:
    return f"alert_channel:{channel_id}"


# --- the notifier ----------------------------------------------------------------------------------------


class AlertNotifier:
    """One per app instance (``Runtime.alert_notifier``): see the module docstring."""

    def __init__(
        self,
        runtime: Runtime,
        alerts: AlertCenter,
        counter: log_setup.ErrorCounter,
        *,
        instance: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.runtime = runtime
        self.alerts = alerts
        self.counter = counter
        self.instance = instance
        self.transport = transport
        self._unsaved: list[AlertTransition] = []
        self._last_daily: float | None = None
        self._task: asyncio.Task[None] | None = None

    def now(self) -> datetime:
        return _utc(self.runtime.clock())

    # one step of each kind (tests call them directly) ----------------------------------------------------
    def check_surge(self) -> log_surge.SurgeReading:
        return log_surge.evaluate(self.counter, self.alerts, self.runtime.settings)

    def record(self) -> int:
        """Write the pending transitions and queue their deliveries (blocking). Returns events written; on
        a database error the transitions are kept for the next call."""
        self._unsaved.extend(self.alerts.drain_transitions())
        if not self._unsaved:
            return 0
        batch = list(self._unsaved)
        with session_scope(self.runtime.session_factory) as session:
            events = store_transitions(session, batch, self.instance)
            enqueue(session, events, self.now())
        del self._unsaved[: len(batch)]
        return len(events)

    def daily(self) -> None:
        """Certificate expiry and pruning (blocking)."""
        now = self.now()
        statuses = certificates.check_all(self.runtime.settings, now)
        certificates.update_alerts(self.alerts, statuses, now)
        with session_scope(self.runtime.session_factory) as session:
            pruned = prune(session, self.runtime.settings.alert_days, now)
        if pruned:
            log.info("pruned %d alert history entries", pruned)

    async def deliver(self) -> int:
        """Send what is due; returns how many were sent."""
        claimed = await asyncio.to_thread(claim_due, self.runtime, self.now())
        sent = 0
        for item in claimed:
            error: str | None = None
            try:
                await alert_channels.send(item.target, item.notice, self.transport)
            except DeliveryError as exc:
                error = str(exc)
            except Exception as exc:  # a bug in one channel must not stop the others
                log.warning("alert channel %s failed unexpectedly", item.target.name, exc_info=True)
                error = f"{type(exc).__name__}"
            status = await asyncio.to_thread(finish, self.runtime, item, error, self.now())
            key = channel_alert_key(item.target.channel_id)
            if error is None:
                sent += 1
                self.alerts.resolve(key, self.now())
            else:
                log.warning("alert channel %s: delivery %s: %s", item.target.name, status, error)
                self.alerts.raise_alert(
                    key,
                    level="alert" if status == "failed" else "warning",
                    metric="alert_channel",
                    value=item.attempts + 1,
                    message=f"alert channel {item.target.name} is failing: {error}",
                    now=self.now(),
                )
        return sent

    async def tick(self) -> None:
        self.check_surge()
        epoch = self.runtime.clock()
        if self._last_daily is None or epoch - self._last_daily >= DAILY.total_seconds():
            self._last_daily = epoch
            await asyncio.to_thread(self.daily)
        await asyncio.to_thread(self.record)
        await self.deliver()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # the database away, say: the transitions wait for the next tick
                log.warning("alert notifier tick failed", exc_info=True)
            await asyncio.sleep(TICK_SECONDS)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="modeltrain-alerts")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await aio.cancel_and_wait(task)
        try:  # what was raised last is stored (sending waits for the next start, on any instance)
            await asyncio.to_thread(self.record)
        except Exception:
            log.warning("could not store the last alert changes", exc_info=True)


def get_notifier(runtime: Runtime) -> AlertNotifier:
    if runtime.alert_notifier is None:
        runtime.alert_notifier = AlertNotifier(
            runtime,
            get_alert_center(runtime),
            log_setup.error_counter(),
            instance=cluster.instance_name(runtime.settings),
        )
    return runtime.alert_notifier


async def start(runtime: Runtime) -> AlertNotifier:
    notifier = get_notifier(runtime)
    notifier.start()
    return notifier


async def stop(runtime: Runtime) -> None:
    if runtime.alert_notifier is not None:
        await runtime.alert_notifier.stop()


# --- "send a test" ---------------------------------------------------------------------------------------


async def send_test(runtime: Runtime, channel_id: uuid.UUID) -> str | None:
    """Send a test message through one channel now (not queued); record the outcome on the channel and
    raise (or resolve) its ``alert_channel:<id>`` alert. Returns the error, or None when it was delivered."""
    secrets = get_secret_store(runtime)
    instance = cluster.instance_name(runtime.settings)

    def load() -> Target:
        with session_scope(runtime.session_factory) as session:
            return alert_channels.target_of(alert_channels.get_channel(session, channel_id), secrets)

    target = await asyncio.to_thread(load)
    now = _utc(runtime.clock())
    notice = Notice(
        key="test",
        state="test",
        level="warning",
        message="A test message from ModelTrain: this channel works.",
        value=None,
        instance=instance,
        at=now,
        since=now,
    )
    transport = runtime.alert_notifier.transport if runtime.alert_notifier is not None else None
    error: str | None = None
    try:
        await alert_channels.send(target, notice, transport)
    except DeliveryError as exc:
        error = str(exc)

    def save() -> None:
        with session_scope(runtime.session_factory) as session:
            channel = session.get(AlertChannel, channel_id)
            if channel is not None:
                record_attempt(channel, error, _utc(runtime.clock()))

    await asyncio.to_thread(save)
    # The channel's state is news like any delivery's: failing raises its alert, working resolves it.
    alerts, key, at = get_alert_center(runtime), channel_alert_key(channel_id), _utc(runtime.clock())
    if error is None:
        alerts.resolve(key, at)
    else:
        alerts.raise_alert(
            key,
            level="warning",
            metric="alert_channel",
            value=None,
            message=f"alert channel {target.name} is failing: {error}",
            now=at,
        )
    return error
