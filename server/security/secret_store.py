"""The JWT signing secret: from SECRET_KEY, else generated once and kept in a 0600 file in the data dir."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from server.settings import Settings, generate_secret

log = logging.getLogger(__name__)
SECRET_FILE = "secret_key"


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name == "posix":
        path.chmod(0o700)


def write_private_file(path: Path, content: str) -> None:
    """Create or replace ``path`` with mode 0600 from the first byte (never briefly world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_secret(settings: Settings) -> str:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    ensure_private_dir(settings.data_dir)
    path = settings.data_dir / SECRET_FILE
    if path.exists():
        if os.name == "posix" and path.stat().st_mode & 0o077:
            path.chmod(0o600)
            log.warning("tightened permissions of %s to 0600", path)
        secret = path.read_text(encoding="utf-8").strip()
        if len(secret) >= 32:
            return secret
        log.warning("the stored secret in %s is unusable; generating a new one", path)
    secret = generate_secret()
    write_private_file(path, secret)
    log.info("generated a new signing secret in %s", path)
    return secret
