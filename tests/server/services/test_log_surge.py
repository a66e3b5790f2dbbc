"""The error-log surge alert (services/log_surge.py): a controlled clock and a burst of logged errors
raise a warning, then an alert, then resolve; the floor keeps a quiet server's few errors from counting;
the counter is fed by the logging pipeline that ``configure_logging`` installs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from server.log_setup import (
    ErrorCounter,
    ErrorCountHandler,
    configure_logging,
    error_counter,
    shutdown_logging,
)
from server.services import log_surge
from server.services.alerts import AlertCenter
from server.settings import Settings


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def counter(clock: Clock) -> ErrorCounter:
    return ErrorCounter(clock=clock)


@pytest.fixture
def app_log(counter: ErrorCounter) -> Iterator[logging.Logger]:
    """A logger whose records reach the counting handler only (as the root logger's would)."""
    logger = logging.getLogger("tests.surge")
    handler = ErrorCountHandler(counter)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


@pytest.fixture
def surge_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(log_surge_warning_factor=3, log_surge_alert_factor=10, log_surge_floor=10)


def _errors(logger: logging.Logger, n: int) -> None:
    for i in range(n):
        logger.error("upstream failed %d", i)


def test_a_burst_of_errors_raises_a_warning_then_an_alert_then_resolves(
    clock: Clock, counter: ErrorCounter, app_log: logging.Logger, surge_settings: Settings
) -> None:
    alerts = AlertCenter()
    # The hour before: two errors a minute is this server's normal (a baseline of 10 per 5 minutes).
    for _ in range(60):
        _errors(app_log, 2)
        app_log.warning("not counted")
        app_log.info("not counted either")
        clock.advance(60)
    clock.advance(4 * 60)  # the current minute and four more: five quiet minutes
    assert log_surge.evaluate(counter, alerts, surge_settings).level == "normal"
    assert alerts.active() == []

    _errors(app_log, 35)  # 3.5 x the baseline
    reading = log_surge.evaluate(counter, alerts, surge_settings)
    assert (reading.recent, reading.baseline, reading.level) == (35, 10.0, "warning")
    (alert,) = alerts.active()
    assert (alert.key, alert.level, alert.metric, alert.value) == (
        "logs:error_surge",
        "warning",
        "log_errors",
        35,
    )

    app_log.critical("disk gone")
    _errors(app_log, 70)  # 106 > 10 x the baseline
    assert log_surge.evaluate(counter, alerts, surge_settings).level == "alert"
    assert alerts.active()[0].level == "alert"

    clock.advance(5 * 60)  # the burst leaves the 5-minute window
    assert log_surge.evaluate(counter, alerts, surge_settings).level == "normal"
    assert alerts.active() == []
    (resolved,) = alerts.recent()
    assert resolved.until is not None
    assert [t.state for t in alerts.drain_transitions()] == ["raised", "changed", "resolved"]


def test_a_few_errors_on_a_quiet_server_are_not_a_surge(
    clock: Clock, counter: ErrorCounter, app_log: logging.Logger, surge_settings: Settings
) -> None:
    alerts = AlertCenter()
    _errors(app_log, 9)  # infinitely more than a baseline of 0, but under the floor
    assert log_surge.evaluate(counter, alerts, surge_settings).level == "normal"
    _errors(app_log, 1)
    assert log_surge.evaluate(counter, alerts, surge_settings).level == "alert"


def test_the_counter_keeps_only_the_last_seventy_minutes(clock: Clock, counter: ErrorCounter) -> None:
    counter.add(5)
    clock.advance(71 * 60)
    counter.add()
    assert sum(counter.per_minute(200)) == 1
    assert counter.per_minute(3) == [0, 0, 1]


def test_configure_logging_counts_error_records_of_the_process(
    make_settings: Callable[..., Settings],
) -> None:
    configure_logging(make_settings(), console=False)
    try:
        before = error_counter().recent()
        logging.getLogger("tests.surge.root").error("one")
        logging.getLogger("tests.surge.root").warning("not this")
        assert error_counter().recent() == before + 1
    finally:
        shutdown_logging()
    logging.getLogger("tests.surge.root").error("not counted once logging is shut down")
    assert error_counter().recent() == before + 1
