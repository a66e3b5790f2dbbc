"""The daily backup: one run per slot across every instance sharing the database, retention after each
run, and the lifespan hooks that start and stop it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

import anyio.to_thread
from sqlalchemy import CursorResult, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from server import aio
from server.db.models import BackupLease
from server.db.session import session_scope
from server.errors import DomainError
from server.schemas.backup import BackupRecord
from server.services.alerts import AlertCenter, get_alert_center
from server.services.backups.create import create_backup
from server.services.backups.errors import BackupBusy
from server.services.backups.store import store_for
from server.settings import Settings

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger(__name__)

SCHEDULE_LEASE = "daily-backup"
#: An unfinished scheduled run is retried by any instance after this long.
LEASE_SECONDS = 3600


def _local_now() -> datetime:
    return datetime.now().astimezone()


class BackupScheduler:
    """Daily backups at ``backup_schedule`` local time, once per slot across every instance that shares
    the database (a lease row claimed with a conditional UPDATE), with retention after each run.

    A missed slot (the computer was off at 03:00) runs at the next check after start. ``clock`` returns
    an aware local datetime; tests inject one.
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        *,
        alerts: AlertCenter | None = None,
        clock: Callable[[], datetime] = _local_now,
        holder: str | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.alerts = alerts
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._done_slot: str | None = None
        self._task: asyncio.Task[None] | None = None

    def due_slot(self, now: datetime) -> datetime | None:
        """The latest scheduled time at or before ``now`` (None when the schedule is off)."""
        if self.settings.backup_schedule == "off":
            return None
        hour, minute = (int(x) for x in self.settings.backup_schedule.split(":"))
        slot = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if slot > now:
            slot = (slot - timedelta(days=1)).replace(hour=hour, minute=minute)
        return slot

    @staticmethod
    def slot_key(slot: datetime) -> str:
        return slot.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")

    def _claim(self, key: str, now_utc: datetime) -> bool:
        try:
            with session_scope(self.session_factory) as session:
                if session.get(BackupLease, SCHEDULE_LEASE) is None:
                    session.add(BackupLease(name=SCHEDULE_LEASE, slot="", state="idle", holder=""))
        except IntegrityError:
            pass  # another instance created it at the same moment
        with session_scope(self.session_factory) as session:
            result = session.execute(
                update(BackupLease)
                .where(
                    BackupLease.name == SCHEDULE_LEASE,
                    (BackupLease.slot < key)
                    | (
                        (BackupLease.slot == key)
                        & (BackupLease.state != "done")
                        & ((BackupLease.lease_until.is_(None)) | (BackupLease.lease_until < now_utc))
                    ),
                )
                .values(
                    slot=key,
                    state="running",
                    holder=self.holder,
                    lease_until=now_utc + timedelta(seconds=LEASE_SECONDS),
                )
                .execution_options(synchronize_session=False)
            )
            return cast("CursorResult[Any]", result).rowcount == 1  # an UPDATE answers a cursor result

    def _finish(self, key: str, state: str) -> None:
        with session_scope(self.session_factory) as session:
            session.execute(
                update(BackupLease)
                .where(
                    BackupLease.name == SCHEDULE_LEASE,
                    BackupLease.slot == key,
                    BackupLease.holder == self.holder,
                )
                .values(
                    state=state, lease_until=datetime.now(timezone.utc) + timedelta(seconds=LEASE_SECONDS)
                )
                .execution_options(synchronize_session=False)
            )

    def tick(self) -> BackupRecord | None:
        """Run the due backup if no instance has run it yet. Returns the backup this call made."""
        now = self.clock()
        slot = self.due_slot(now)
        if slot is None:
            return None
        key = self.slot_key(slot)
        if key == self._done_slot:
            return None
        now_utc = now.astimezone(timezone.utc)
        if not self._claim(key, now_utc):
            return None
        try:
            info = create_backup(
                self.settings, kind="scheduled", alerts=self.alerts, now=now_utc, lock_wait=30.0
            )
        except Exception as exc:
            reason = exc.message if isinstance(exc, DomainError) else type(exc).__name__
            log.error("scheduled backup failed: %s", reason)
            with contextlib.suppress(Exception):
                self._finish(key, "failed")
            if self.alerts is not None:
                self.alerts.raise_alert(
                    "backup:failed",
                    level="alert",
                    metric="backup",
                    value=None,
                    message=f"scheduled backup failed: {reason}",
                )
            return None
        self._finish(key, "done")
        self._done_slot = key
        if self.alerts is not None:
            self.alerts.resolve("backup:failed")
        removed = store_for(self.settings).prune(self.settings.backup_keep_days, now_utc)
        if removed:
            log.info("retention removed %d old backup(s)", len(removed))
        return info

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.backup_check_seconds)
            try:
                await anyio.to_thread.run_sync(self.tick)
            except Exception:
                log.exception("backup scheduler check failed")

    def start(self) -> None:
        if self._task is None and self.settings.backup_schedule != "off":
            self._task = asyncio.get_running_loop().create_task(self._run(), name="modeltrain-backups")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await aio.cancel_and_wait(task)


def alert_on_unverified(settings: Settings, alerts: AlertCenter) -> None:
    """At start: an unverified newest backup is an active alert (the state lives in the sidecars)."""
    newest = next(iter(store_for(settings).list()), None)
    if newest is not None and not newest.verified:
        alerts.raise_alert(
            "backup:verification",
            level="alert",
            metric="backup",
            value=newest.id,
            message=f"backup {newest.id} failed verification: {newest.verify_error or 'unknown reason'}",
        )


def remove_leftovers(settings: Settings) -> int:
    """At start: remove what a backup or restore that a crash interrupted left behind (work directories,
    ``.part`` archives), so nothing half-written waits for the next backup. Skipped while another process
    holds the backup lock (it is making one: its files are not leftovers). Returns how many were removed."""
    store = store_for(settings)
    if not store.directory.is_dir():
        return 0
    try:
        with store.lock():
            return store.cleanup_partials()
    except BackupBusy:
        return 0


async def start(runtime: Runtime) -> None:
    """Lifespan hook: leftovers of an interrupted backup, upload limit for upload-restore, verification
    alerts, and the scheduler."""
    settings = runtime.settings
    runtime.guard.body_limit_overrides["/api/backups/upload-restore"] = settings.max_upload_bytes
    alerts = get_alert_center(runtime)
    with contextlib.suppress(OSError):
        await anyio.to_thread.run_sync(remove_leftovers, settings)
    with contextlib.suppress(OSError):
        await anyio.to_thread.run_sync(alert_on_unverified, settings, alerts)
    scheduler = BackupScheduler(settings, runtime.session_factory, alerts=alerts)
    runtime.backup_scheduler = scheduler
    scheduler.start()


async def stop(runtime: Runtime) -> None:
    scheduler, runtime.backup_scheduler = runtime.backup_scheduler, None
    if scheduler is not None:
        await scheduler.stop()
