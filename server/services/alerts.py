"""Alert feed: what the tray and the admin UI show. In memory, per app; thread-safe.

An alert is keyed (``metric:cpu``, ``backup:verification``...): raising an active key again updates its
level/value/message but keeps ``since``; resolving it moves it to the recent list with ``until`` set.

Every change (raised, changed level, resolved) is also queued as an :class:`AlertTransition` that the
alert notifier (services/alert_history.py) drains into the shared history and the outbound channels.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

from pydantic import ValidationError

from server.runtime import Runtime
from server.schemas.alert import AlertFeed, AlertRead

log = logging.getLogger(__name__)
LEVELS = ("warning", "alert")
RECENT_LIMIT = 100
#: Transitions kept for the notifier; beyond this (no notifier running) the oldest are dropped.
TRANSITIONS_LIMIT = 1000


@dataclass(frozen=True)
class AlertTransition:
    """One change of an alert: ``state`` raised | changed | resolved, at ``at``."""

    key: str
    metric: str
    state: str
    level: str
    message: str
    value: float | str | None
    since: datetime
    at: datetime


class AlertCenter:
    def __init__(self, recent_limit: int = RECENT_LIMIT) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, AlertRead] = {}
        self._recent: deque[AlertRead] = deque(maxlen=recent_limit)
        self._ids = itertools.count(1)
        self._transitions: deque[AlertTransition] = deque(maxlen=TRANSITIONS_LIMIT)

    def _note(self, alert: AlertRead, state: str, at: datetime) -> None:
        self._transitions.append(
            AlertTransition(
                key=alert.key,
                metric=alert.metric,
                state=state,
                level=alert.level,
                message=alert.message,
                value=alert.value,
                since=alert.since,
                at=at,
            )
        )

    def drain_transitions(self) -> list[AlertTransition]:
        """The changes since the last call, oldest first (the notifier stores and sends them)."""
        with self._lock:
            items = list(self._transitions)
            self._transitions.clear()
            return items

    def raise_alert(
        self,
        key: str,
        *,
        level: str,
        metric: str,
        value: float | str | None,
        message: str,
        now: datetime | None = None,
    ) -> AlertRead:
        if level not in LEVELS:
            raise ValueError(f"unknown alert level {level!r}")
        now = now or datetime.now(timezone.utc)
        with self._lock:
            alert = self._active.get(key)
            if alert is None:
                alert = AlertRead(
                    id=next(self._ids),
                    key=key,
                    level=level,
                    metric=metric,
                    value=value,
                    message=message,
                    since=now,
                )
                self._active[key] = alert
                self._recent.appendleft(alert)
                log.warning("alert raised: %s (%s) %s", key, level, message)
                self._note(alert, "raised", now)
            else:
                changed = alert.level != level
                if changed:
                    log.warning("alert %s is now %s: %s", key, level, message)
                alert.level, alert.value, alert.message = level, value, message
                if changed:
                    self._note(alert, "changed", now)
            return alert

    def resolve(self, key: str, now: datetime | None = None) -> None:
        with self._lock:
            alert = self._active.pop(key, None)
            if alert is not None:
                alert.until = now or datetime.now(timezone.utc)
                log.info("alert resolved: %s", key)
                self._note(alert, "resolved", alert.until)

    def active(self) -> list[AlertRead]:
        with self._lock:
            return sorted(self._active.values(), key=lambda a: a.since)

    def recent(self) -> list[AlertRead]:
        with self._lock:
            return list(self._recent)

    def snapshot(self) -> AlertFeed:
        """Copies, so the feed does not change under a caller that serialises it later."""
        with self._lock:
            active = sorted(self._active.values(), key=lambda a: a.since)
            return AlertFeed(
                active=[a.model_copy() for a in active], recent=[a.model_copy() for a in self._recent]
            )


def deployment_feed(runtime: Runtime) -> AlertFeed:
    """``GET /api/alerts``: this instance's feed, every alert labelled with its instance, plus the other
    live instances' active alerts (services/cluster.py snapshots)."""
    from server.services import cluster

    name = cluster.instance_name(runtime.settings)
    feed = get_alert_center(runtime).snapshot()
    for alert in (*feed.active, *feed.recent):
        alert.instance = name
    instances = [name]
    for snap in cluster.other_snapshots(runtime):
        instances.append(snap["instance"])
        for raw in snap["alerts"]:
            try:
                feed.active.append(AlertRead.model_validate({**raw, "instance": snap["instance"]}))
            except ValidationError:
                continue  # another version's alert: left out rather than failing the feed
    feed.active.sort(key=lambda a: a.since)
    return feed.model_copy(update={"instance": name, "instances": instances})


def get_alert_center(runtime: Runtime) -> AlertCenter:
    """The app's alert center (created on first use)."""
    if runtime.alerts is None:
        runtime.alerts = AlertCenter()
    return runtime.alerts
