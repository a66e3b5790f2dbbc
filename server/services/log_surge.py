"""The error-log surge alert: ERROR/CRITICAL log records of the last 5 minutes against the hour before.

The counts come from the logging pipeline itself (``server.log_setup.ErrorCountHandler``, installed by
``configure_logging``), never from re-reading log files. The baseline is the 5-minute average of the 60
minutes before the last 5; a warning when the last 5 minutes exceed ``log_surge_warning_factor`` times it,
an alert at ``log_surge_alert_factor`` — and never below ``log_surge_floor`` records, so one error on a
quiet server is not a surge. The alert resolves when the count falls back under the warning line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from server.log_setup import ErrorCounter
from server.services.alerts import AlertCenter
from server.settings import Settings

ALERT_KEY = "logs:error_surge"
RECENT_MINUTES = 5
BASELINE_MINUTES = 60


@dataclass(frozen=True)
class SurgeReading:
    recent: int
    baseline: float
    level: str  # normal | warning | alert


def judge(counter: ErrorCounter, settings: Settings, now: float | None = None) -> SurgeReading:
    minutes = counter.per_minute(RECENT_MINUTES + BASELINE_MINUTES, ending=now)
    recent = sum(minutes[-RECENT_MINUTES:])
    baseline = sum(minutes[:-RECENT_MINUTES]) * RECENT_MINUTES / BASELINE_MINUTES
    level = "normal"
    if recent >= settings.log_surge_floor:
        alert_factor = max(settings.log_surge_alert_factor, settings.log_surge_warning_factor)
        if recent > settings.log_surge_warning_factor * baseline:
            level = "warning"
        if recent > alert_factor * baseline:
            level = "alert"
    return SurgeReading(recent=recent, baseline=round(baseline, 2), level=level)


def evaluate(counter: ErrorCounter, alerts: AlertCenter, settings: Settings) -> SurgeReading:
    """Judge the counts now (the counter's clock) and raise, change or resolve the surge alert."""
    reading = judge(counter, settings)
    at = datetime.fromtimestamp(counter.clock(), timezone.utc)
    if reading.level == "normal":
        alerts.resolve(ALERT_KEY, at)
    else:
        alerts.raise_alert(
            ALERT_KEY,
            level=reading.level,
            metric="log_errors",
            value=reading.recent,
            message=f"{reading.recent} error log records in the last {RECENT_MINUTES} minutes "
            f"(usual: {reading.baseline:g})",
            now=at,
        )
    return reading
