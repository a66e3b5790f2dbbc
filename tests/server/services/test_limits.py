"""The limits' pure parts: UTC windows and OpenAI's reset-duration format."""

from __future__ import annotations

from datetime import datetime, timezone

from server.services import limits as limits_service


def test_reset_duration_format() -> None:
    fmt = limits_service.reset_duration
    assert [fmt(0.02), fmt(1), fmt(59.2), fmt(360), fmt(3723)] == ["20ms", "1s", "1m0s", "6m0s", "1h2m3s"]


def test_windows_start_at_the_utc_minute_day_and_month() -> None:
    t = datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()
    iso = lambda s: datetime.fromtimestamp(s, timezone.utc).isoformat()  # noqa: E731
    assert [iso(x) for x in limits_service.window("tokens_per_month", t)] == [
        "2026-12-01T00:00:00+00:00",
        "2027-01-01T00:00:00+00:00",
    ]
    assert iso(limits_service.window("tokens_per_day", t)[1]) == "2027-01-01T00:00:00+00:00"
    assert iso(limits_service.window("requests_per_minute", t)[0]) == "2026-12-31T23:59:00+00:00"
