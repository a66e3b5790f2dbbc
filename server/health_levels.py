"""The health rules shared by the server's metrics and the desktop tray: the spec's thresholds
(normal / warning / alert) and how an Ollama state reads. Standard library only, so the tray can use
them without loading the server stack."""

from __future__ import annotations

DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {
    "cpu": (70.0, 90.0),
    "memory": (80.0, 95.0),
    "disk": (80.0, 90.0),
    "latency": (500.0, 2000.0),
    "error_rate": (1.0, 5.0),
    "gpu_memory": (80.0, 95.0),  # percent of each GPU's memory
    "gpu_temperature": (80.0, 90.0),  # °C
}
OLLAMA_NORMAL = frozenset({"running", "external", "ready"})
OLLAMA_ALERT = frozenset({"crashed", "failed", "error"})
OLLAMA_QUIET = frozenset({"unknown", "disabled", "not_managed"})


def classify(value: float, thresholds: tuple[float, float]) -> str:
    """normal below the warning threshold, alert above the alert threshold, warning in between."""
    warning, alert = thresholds
    if value > alert:
        return "alert"
    if value >= warning:
        return "warning"
    return "normal"


def ollama_status(state: str) -> str:
    if state in OLLAMA_NORMAL or state in OLLAMA_QUIET:
        return "normal"
    if state in OLLAMA_ALERT:
        return "alert"
    return "warning"  # starting, stopped, not_installed...
