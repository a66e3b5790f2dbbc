"""What every ``modeltrain`` sub-command shares: settings from the command line, and the one error line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from server.settings import Settings, load_settings


def fail(message: str, code: int = 2) -> int:
    """Print ``modeltrain: error: ...`` on stderr; return the exit code (2: configuration or usage)."""
    print(f"modeltrain: error: {message}", file=sys.stderr)
    return code


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings with the explicit ``--host``/``--port``/``--data-dir`` of the command line on top."""
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "data_dir"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    overrides["desktop_mode"] = False  # the desktop sign-in token exists only inside the desktop host
    return load_settings(**overrides)
