"""server/health_levels.py: the spec's thresholds and Ollama states, shared by metrics and the tray."""

from __future__ import annotations

import pytest

from server import health_levels


@pytest.mark.parametrize(
    ("metric", "value", "expected"),
    [
        ("cpu", 69.9, "normal"),
        ("cpu", 70, "warning"),
        ("cpu", 90, "warning"),
        ("cpu", 90.1, "alert"),
        ("memory", 79, "normal"),
        ("memory", 85, "warning"),
        ("memory", 96, "alert"),
        ("disk", 79.9, "normal"),
        ("disk", 80, "warning"),
        ("disk", 91, "alert"),
        ("latency", 499, "normal"),
        ("latency", 500, "warning"),
        ("latency", 2001, "alert"),
        ("error_rate", 0.5, "normal"),
        ("error_rate", 1, "warning"),
        ("error_rate", 5.5, "alert"),
    ],
)
def test_spec_thresholds(metric: str, value: float, expected: str) -> None:
    assert health_levels.classify(value, health_levels.DEFAULT_THRESHOLDS[metric]) == expected


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("running", "normal"),
        ("external", "normal"),
        ("not_managed", "normal"),
        ("unknown", "normal"),
        ("starting", "warning"),
        ("stopped", "warning"),
        ("crashed", "alert"),
        ("failed", "alert"),
    ],
)
def test_ollama_states(state: str, expected: str) -> None:
    assert health_levels.ollama_status(state) == expected
