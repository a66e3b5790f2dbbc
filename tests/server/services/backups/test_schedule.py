"""The daily schedule with an injected clock, one run per slot across instances sharing a database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine

from server.db.session import create_db_engine, create_session_factory
from server.services import backups
from server.services.alerts import AlertCenter
from server.settings import Settings

LOCAL = timezone(timedelta(hours=1))  # a fixed "local" zone keeps the test independent of the machine


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_schedule_runs_daily_at_three_with_an_injected_clock(settings: Settings, engine: Engine) -> None:
    clock = Clock(datetime(2026, 11, 27, 2, 59, tzinfo=LOCAL))
    alerts = AlertCenter()
    scheduler = backups.BackupScheduler(settings, create_session_factory(engine), alerts=alerts, clock=clock)
    store = backups.store_for(settings)

    # first start: yesterday's 03:00 was missed, so it is caught up once
    first = scheduler.tick()
    assert first is not None and first.kind == "scheduled" and first.verified
    assert scheduler.tick() is None
    clock.now = datetime(2026, 11, 27, 2, 59, 59, tzinfo=LOCAL)
    assert scheduler.tick() is None

    clock.now = datetime(2026, 11, 27, 3, 0, tzinfo=LOCAL)
    second = scheduler.tick()
    assert second is not None
    assert second.created_at == datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)  # 03:00 local
    for minutes in (1, 60, 23 * 60 + 59):
        clock.now = datetime(2026, 11, 27, 3, 0, tzinfo=LOCAL) + timedelta(minutes=minutes)
        assert scheduler.tick() is None
    clock.now = datetime(2026, 11, 28, 3, 0, 5, tzinfo=LOCAL)
    assert scheduler.tick() is not None
    assert len(store.list()) == 3
    assert alerts.active() == []

    # a second scheduler (a restarted process) does not repeat a slot that is done
    again = backups.BackupScheduler(settings, create_session_factory(engine), clock=clock)
    assert again.tick() is None


def test_schedule_keeps_only_seven_days(settings: Settings, engine: Engine) -> None:
    clock = Clock(datetime(2026, 11, 1, 3, 0, tzinfo=LOCAL))
    scheduler = backups.BackupScheduler(settings, create_session_factory(engine), clock=clock)
    for day in range(12):
        clock.now = datetime(2026, 11, 1, 3, 0, tzinfo=LOCAL) + timedelta(days=day)
        assert scheduler.tick() is not None
    items = backups.store_for(settings).list()
    newest = items[0].created_at
    assert all(newest - b.created_at <= timedelta(days=7) for b in items)
    assert len(items) == 8  # today and the seven days before


def test_schedule_off_and_custom_time(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'modeltrain.db'}"
    off = make_settings(database_url=url, backup_schedule="off")
    scheduler = backups.BackupScheduler(
        off,
        create_session_factory(create_db_engine(url)),
        clock=Clock(datetime(2026, 11, 27, 12, tzinfo=LOCAL)),
    )
    assert scheduler.due_slot(scheduler.clock()) is None
    assert scheduler.tick() is None
    late = make_settings(database_url=url, backup_schedule="23:30")
    s2 = backups.BackupScheduler(late, create_session_factory(create_db_engine(url)))
    assert s2.due_slot(datetime(2026, 11, 27, 23, 29, tzinfo=LOCAL)) == datetime(
        2026, 11, 26, 23, 30, tzinfo=LOCAL
    )
    assert s2.due_slot(datetime(2026, 11, 27, 23, 31, tzinfo=LOCAL)) == datetime(
        2026, 11, 27, 23, 30, tzinfo=LOCAL
    )
    with pytest.raises(ValueError, match="HH:MM"):
        make_settings(database_url=url, backup_schedule="25:00")


def test_instances_sharing_a_database_run_a_slot_once(settings: Settings, engine: Engine) -> None:
    """Four instances (own engines, own pools, same SQLite file) tick at the same instant."""
    clock = Clock(datetime(2026, 11, 27, 3, 0, 1, tzinfo=LOCAL))
    engines = [create_db_engine(settings.resolved_database_url) for _ in range(4)]
    schedulers = [
        backups.BackupScheduler(settings, create_session_factory(e), clock=clock, holder=f"instance-{i}")
        for i, e in enumerate(engines)
    ]
    barrier = threading.Barrier(len(schedulers))
    results: list[object] = [None] * len(schedulers)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = schedulers[i].tick()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(schedulers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert sum(r is not None for r in results) == 1
        assert len(backups.store_for(settings).list()) == 1
        # the next day, again exactly one
        clock.now += timedelta(days=1)
        assert sum(s.tick() is not None for s in schedulers) == 1
        assert len(backups.store_for(settings).list()) == 2
    finally:
        for e in engines:
            e.dispose()


def test_an_expired_unfinished_lease_is_taken_over(settings: Settings, engine: Engine) -> None:
    from sqlalchemy import update

    from server.db.models import BackupLease

    clock = Clock(datetime(2026, 11, 27, 3, 0, tzinfo=LOCAL))
    crashed = backups.BackupScheduler(settings, create_session_factory(engine), clock=clock, holder="crashed")
    key = crashed.slot_key(crashed.due_slot(clock.now))
    assert crashed._claim(key, clock.now.astimezone(timezone.utc))  # claimed, then the process died
    other = backups.BackupScheduler(settings, create_session_factory(engine), clock=clock, holder="other")
    assert other.tick() is None  # the lease is still valid
    with engine.begin() as conn:
        conn.execute(update(BackupLease).values(lease_until=datetime(2026, 11, 27, 1, tzinfo=timezone.utc)))
    assert other.tick() is not None


def test_failed_scheduled_backup_raises_an_alert(settings: Settings, engine: Engine, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    broken = settings.model_copy(update={"backup_dir": blocker / "backups"})
    alerts = AlertCenter()
    scheduler = backups.BackupScheduler(
        broken,
        create_session_factory(engine),
        alerts=alerts,
        clock=Clock(datetime(2026, 11, 27, 3, 1, tzinfo=LOCAL)),
    )
    assert scheduler.tick() is None
    active = alerts.active()
    assert [a.key for a in active] == ["backup:failed"] and active[0].level == "alert"
