"""The alert notifier (services/alert_history.py): alerts stored once per instance and labelled, kept
when the database is away, queued per channel (minimum level, quiet hours, repeat interval), delivered with
retries and back-off and a failing channel reported; the history API's filters; retention."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.db.models import AlertChannel, AlertDelivery, AlertEvent
from server.db.session import session_scope
from server.log_setup import ErrorCounter, ErrorCountHandler
from server.runtime import Runtime
from server.services import alert_history
from server.services.alert_history import AlertNotifier
from server.services.alerts import AlertCenter
from server.settings import Settings
from tests.server.alert_support import migrated_runtime, webhook_receiver
from tests.server.conftest import bearer

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(secret_store="file", alert_retry_seconds=30, alert_delivery_attempts=3)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(settings: Settings, clock: Clock) -> Runtime:
    runtime = migrated_runtime(settings)
    runtime.clock = clock
    return runtime


def _notifier(runtime: Runtime, instance: str, clock: Clock) -> AlertNotifier:
    return AlertNotifier(runtime, AlertCenter(), ErrorCounter(clock=clock), instance=instance)


def _webhook_channel(runtime: Runtime, url: str, **fields: object) -> uuid.UUID:
    from server.schemas.alert_channel import AlertChannelCreate
    from server.security.secret_store import get_secret_store
    from server.services import alert_channels
    from server.services.audit import SYSTEM

    body = AlertChannelCreate.model_validate(
        {"name": f"hook-{uuid.uuid4().hex[:6]}", "kind": "webhook", "url": url, **fields}
    )
    with session_scope(runtime.session_factory) as session:
        return alert_channels.create_channel(session, body, get_secret_store(runtime), ctx=SYSTEM).id


def _events(runtime: Runtime) -> list[AlertEvent]:
    with session_scope(runtime.session_factory) as session:
        return list(session.scalars(select(AlertEvent).order_by(AlertEvent.at, AlertEvent.instance)))


def _deliveries(runtime: Runtime) -> list[AlertDelivery]:
    with session_scope(runtime.session_factory) as session:
        return list(session.scalars(select(AlertDelivery).order_by(AlertDelivery.created_at)))


def _raise_disk(notifier: AlertNotifier, clock: Clock, level: str = "warning") -> None:
    notifier.alerts.raise_alert(
        "metric:disk",
        level=level,
        metric="disk",
        value=91.5,
        message="disk 91.5%",
        now=datetime.fromtimestamp(clock(), timezone.utc),
    )


def test_alerts_from_two_workers_are_stored_once_each_and_labelled(runtime: Runtime, clock: Clock) -> None:
    one, two = _notifier(runtime, "host:101", clock), _notifier(runtime, "host:102", clock)
    _raise_disk(one, clock)
    _raise_disk(two, clock)
    raised = one.alerts.drain_transitions()
    assert [t.state for t in raised] == ["raised"]
    one._unsaved.extend(raised * 2)  # the same change offered twice (a retried write) is stored once
    assert one.record() == 1
    assert two.record() == 1
    assert one.record() == 0
    clock.advance(60)
    one.alerts.resolve("metric:disk", datetime.fromtimestamp(clock(), timezone.utc))
    one.record()
    rows = [(e.instance, e.key, e.state, e.level, e.value) for e in _events(runtime)]
    assert rows == [
        ("host:101", "metric:disk", "raised", "warning", "91.5"),
        ("host:102", "metric:disk", "raised", "warning", "91.5"),
        ("host:101", "metric:disk", "resolved", "warning", "91.5"),
    ]


def test_changes_wait_while_the_database_is_away(
    runtime: Runtime, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier = _notifier(runtime, "host:1", clock)
    _raise_disk(notifier, clock)
    real = alert_history.store_transitions

    def broken(*_: object) -> list[AlertEvent]:
        raise OSError("database is locked")

    monkeypatch.setattr(alert_history, "store_transitions", broken)
    with pytest.raises(OSError, match="database is locked"):
        notifier.record()
    monkeypatch.setattr(alert_history, "store_transitions", real)
    assert notifier.record() == 1
    assert [e.state for e in _events(runtime)] == ["raised"]


def test_a_failing_channel_is_retried_with_back_off_then_delivered(runtime: Runtime, clock: Clock) -> None:
    notifier = _notifier(runtime, "host:1", clock)
    with webhook_receiver(statuses=[503, 500, 200]) as hook:
        channel_id = _webhook_channel(runtime, hook.url + "/hook")
        _raise_disk(notifier, clock)
        notifier.record()
        assert asyncio.run(notifier.deliver()) == 0  # first attempt: 503
        (delivery,) = _deliveries(runtime)
        assert (delivery.status, delivery.attempts, delivery.last_error) == (
            "pending",
            1,
            f"{hook.url}/… answered HTTP 503",
        )
        assert delivery.next_attempt_at == T0 + timedelta(seconds=30)
        (failing,) = [a for a in notifier.alerts.active() if a.metric == "alert_channel"]
        assert failing.level == "warning"
        assert "is failing" in failing.message
        with session_scope(runtime.session_factory) as session:
            channel = session.get(AlertChannel, channel_id)
            assert channel is not None
            assert (channel.last_status, channel.last_error) == ("failing", f"{hook.url}/… answered HTTP 503")

        clock.advance(29)
        assert asyncio.run(notifier.deliver()) == 0  # not due yet: nothing sent
        assert len(hook.requests) == 1
        clock.advance(1)
        asyncio.run(notifier.deliver())  # second attempt: 500, next in 60 s (doubled)
        assert _deliveries(runtime)[0].next_attempt_at == T0 + timedelta(seconds=30 + 60)
        clock.advance(60)
        assert asyncio.run(notifier.deliver()) == 1
    (delivery,) = _deliveries(runtime)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 3, None)
    assert len(hook.requests) == 3
    assert all(r.json()["alert"]["key"] == "metric:disk" for r in hook.requests)
    assert not [a for a in notifier.alerts.active() if a.metric == "alert_channel"]  # resolved


def test_a_channel_that_never_answers_is_given_up_and_reported(runtime: Runtime, clock: Clock) -> None:
    notifier = _notifier(runtime, "host:1", clock)
    with webhook_receiver(statuses=[500]) as hook:
        _webhook_channel(runtime, hook.url)
        _raise_disk(notifier, clock)
        notifier.record()
        for _ in range(3):
            asyncio.run(notifier.deliver())
            clock.advance(3600)
    (delivery,) = _deliveries(runtime)
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    (failing,) = [a for a in notifier.alerts.active() if a.metric == "alert_channel"]
    assert failing.level == "alert"


def test_min_level_repeat_interval_and_resolve_decide_what_is_sent(runtime: Runtime, clock: Clock) -> None:
    notifier = _notifier(runtime, "host:1", clock)
    with webhook_receiver() as hook:
        everything = _webhook_channel(runtime, hook.url + "/all", repeat_minutes=30)
        alerts_only = _webhook_channel(runtime, hook.url + "/alerts", min_level="alert")
        now = lambda: datetime.fromtimestamp(clock(), timezone.utc)  # noqa: E731
        _raise_disk(notifier, clock)  # warning: only the first channel
        notifier.record()
        clock.advance(60)
        notifier.alerts.resolve("metric:disk", now())
        notifier.record()
        clock.advance(60)
        _raise_disk(notifier, clock)  # flapping within 30 minutes: suppressed
        notifier.record()
        clock.advance(60)
        notifier.alerts.resolve("metric:disk", now())  # its end is not news either
        notifier.record()
        clock.advance(60)
        _raise_disk(notifier, clock, level="alert")  # an alert goes to both
        notifier.record()
        asyncio.run(notifier.deliver())
    by_channel = {
        cid: [(d.state, d.status) for d in _deliveries(runtime) if d.channel_id == cid]
        for cid in (everything, alerts_only)
    }
    assert by_channel[everything] == [
        ("raised", "sent"),
        ("resolved", "sent"),
        ("raised", "suppressed"),
        ("raised", "suppressed"),  # 4 minutes after the first: still within the interval
    ]
    assert by_channel[alerts_only] == [("raised", "sent")]
    assert [r.path for r in hook.requests] == ["/all", "/all", "/alerts"]


def test_quiet_hours_hold_back_warnings_but_not_alerts(runtime: Runtime, clock: Clock) -> None:
    local = datetime.fromtimestamp(clock()).astimezone()
    start = (local - timedelta(hours=1)).strftime("%H:%M")
    end = (local + timedelta(hours=1)).strftime("%H:%M")
    notifier = _notifier(runtime, "host:1", clock)
    with webhook_receiver() as hook:
        _webhook_channel(runtime, hook.url, quiet_start=start, quiet_end=end, repeat_minutes=0)
        _raise_disk(notifier, clock)
        notifier.record()
        clock.advance(1)
        _raise_disk(notifier, clock, level="alert")
        notifier.record()
        asyncio.run(notifier.deliver())
    assert [(d.state, d.status) for d in _deliveries(runtime)] == [
        ("raised", "suppressed"),
        ("changed", "sent"),
    ]
    assert len(hook.requests) == 1


def test_the_surge_alert_is_stored_and_sent_by_the_notifier(runtime: Runtime, clock: Clock) -> None:
    notifier = _notifier(runtime, "host:1", clock)
    logger = logging.getLogger("tests.alert_history.surge")
    handler = ErrorCountHandler(notifier.counter)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with webhook_receiver() as hook:
            _webhook_channel(runtime, hook.url)
            for i in range(12):
                logger.error("boom %d", i)
            asyncio.run(notifier.tick())
            clock.advance(6 * 60)
            asyncio.run(notifier.tick())
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert [(e.key, e.state, e.level) for e in _events(runtime)] == [
        ("logs:error_surge", "raised", "alert"),
        ("logs:error_surge", "resolved", "alert"),
    ]
    assert [r.json()["alert"]["state"] for r in hook.requests] == ["raised", "resolved"]


def test_old_history_is_pruned(runtime: Runtime, clock: Clock, settings: Settings) -> None:
    notifier = _notifier(runtime, "host:1", clock)
    _raise_disk(notifier, clock)
    notifier.record()
    clock.advance(timedelta(days=settings.alert_days + 1).total_seconds())
    notifier.daily()
    assert _events(runtime) == []


# --- GET /api/alerts/history -----------------------------------------------------------------------------


def test_history_api_filters_and_labels(
    client: TestClient, app: FastAPI, admin_token: str, user_token: str
) -> None:
    runtime: Runtime = app.state.runtime
    with session_scope(runtime.session_factory) as session:
        for i, (instance, key, level, state) in enumerate(
            [
                ("a", "metric:cpu", "warning", "raised"),
                ("b", "metric:cpu", "warning", "raised"),
                ("a", "metric:cpu", "alert", "changed"),
                ("a", "logs:error_surge", "alert", "raised"),
                ("a", "metric:cpu", "alert", "resolved"),
            ]
        ):
            at = T0 + timedelta(minutes=i)
            session.add(
                AlertEvent(
                    at=at,
                    since=T0,
                    key=key,
                    metric=key.split(":")[1],
                    state=state,
                    level=level,
                    message=key,
                    instance=instance,
                )
            )
    h = bearer(admin_token)
    page = client.get("/api/alerts/history", headers=h).json()
    assert page["total"] == 5
    assert page["instances"] == ["a", "b"]
    assert [(e["instance"], e["state"]) for e in page["items"]][:2] == [("a", "resolved"), ("a", "raised")]
    assert client.get("/api/alerts/history?instance=b", headers=h).json()["total"] == 1
    assert client.get("/api/alerts/history?level=alert&key=cpu", headers=h).json()["total"] == 2
    assert client.get("/api/alerts/history?state=raised&size=1", headers=h).json()["total"] == 3
    since = (T0 + timedelta(minutes=3)).isoformat().replace("+00:00", "Z")
    assert client.get(f"/api/alerts/history?from={since}", headers=h).json()["total"] == 2
    assert client.get("/api/alerts/history?level=info", headers=h).status_code == 422
    assert client.get("/api/alerts/history", headers=bearer(user_token)).status_code == 403
