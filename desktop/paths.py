"""Where things are: the data directory (platformdirs) and bundled resources (PyInstaller aware)."""

from __future__ import annotations

import sys
from pathlib import Path

from server.settings import default_data_dir

APP_DIR_NAME = "modeltrain"


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False)) and hasattr(sys, "_MEIPASS")


def resource_root() -> Path:
    """The bundle directory when frozen (``sys._MEIPASS``), else the source checkout."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle)
    return Path(__file__).resolve().parent.parent


def webui_dist() -> Path:
    """The built web UI (``webui/dist``); it may not exist (the server then shows a "not built" page)."""
    return resource_root() / "webui" / "dist"


def data_dir(override: str | Path | None = None) -> Path:
    if override:
        return Path(override).expanduser().resolve()
    return default_data_dir()


def qsettings_file(data: Path) -> Path:
    """Window geometry and desktop preferences (QSettings, INI format) live in the data dir."""
    return data / "desktop.ini"


def local_server_name(data: Path) -> str:
    """A single-instance name per OS user and data directory (two data dirs may run side by side)."""
    import getpass
    import hashlib

    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = "user"
    digest = hashlib.sha256(f"{user}\0{data}".encode()).hexdigest()[:16]
    return f"{APP_DIR_NAME}-{digest}"
