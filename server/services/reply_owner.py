"""Which replies left ``streaming`` are this instance's own (docs/security.md, E5).

Every reply records the instance streaming it (``messages.instance_id``) and that process's incarnation
(``messages.incarnation_id``). The *instance* is this host plus this data directory: it stays the same
across restarts, whatever ``MODELTRAIN_INSTANCE_NAME`` says (its default, ``<hostname>:<pid>``, changes
with every start). The *incarnation* is random per process.

Several live processes may share one instance id (gunicorn workers, two ``serve`` on one data directory),
so a different incarnation alone does not prove a crash. Each incarnation therefore holds an exclusive
lock on ``<data dir>/run/replies-<incarnation>.lock`` for as long as it lives; the operating system
releases it when the process dies, ``kill -9`` included. A starting instance marks the streaming replies
of an incarnation of its own instance interrupted at once when that lock is free (or its file gone);
everything else is left to the 45 s staleness rule of ``services/chat.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import sys
import uuid
from pathlib import Path

from server.settings import Settings

log = logging.getLogger(__name__)

RUN_DIR = "run"
PREFIX = "replies-"
SUFFIX = ".lock"
_INCARNATION = re.compile(r"[0-9a-f]{32}")


def instance_id(settings: Settings) -> str:
    """This instance across restarts: a hash of the host name and the resolved data directory."""
    data_dir = os.path.realpath(settings.data_dir.expanduser())
    return hashlib.sha256(f"{socket.gethostname()}\0{data_dir}".encode()).hexdigest()[:32]


def _lock(fd: int) -> bool:
    """Take the exclusive lock of ``fd`` without waiting; False when another process holds it."""
    try:
        if sys.platform == "win32":  # pragma: no cover - Windows
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class Incarnation:
    """This process's incarnation of the instance: a random id and the lock file that says it lives."""

    def __init__(self, settings: Settings) -> None:
        self.instance_id = instance_id(settings)
        self.id = uuid.uuid4().hex
        self.directory = settings.data_dir.expanduser() / RUN_DIR
        self._fd: int | None = None

    @property
    def claimed(self) -> bool:
        """Whether this incarnation holds its lock (only then do its replies name it)."""
        return self._fd is not None

    def path(self, incarnation: str) -> Path:
        return self.directory / f"{PREFIX}{incarnation}{SUFFIX}"

    def claim(self) -> bool:
        """Create and lock this incarnation's file (blocking I/O). False when that is impossible (a
        read-only data directory): the replies then name no owner and only the staleness rule applies."""
        for _ in range(3):
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.path(self.id), os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                log.warning("replies cannot name their instance (%s): crashes found by staleness only", exc)
                return False
            # Another instance's sweep may have found the file between its creation and the lock, taken it
            # for a dead one's and deleted it: then the lock holds an unlinked file, and a fresh id is used.
            if _lock(fd) and self._still_named(fd):
                self._fd = fd
                return True
            os.close(fd)
            self.id = uuid.uuid4().hex
        return False

    def _still_named(self, fd: int) -> bool:
        try:
            return os.stat(self.path(self.id)).st_ino == os.fstat(fd).st_ino
        except OSError:
            return False

    def release(self) -> None:
        """Remove the lock file and let go of the lock (at shutdown)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path(self.id).unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    def is_alive(self, incarnation: str) -> bool:
        """Whether a process of this instance still runs as ``incarnation`` (its lock is held)."""
        if incarnation == self.id:
            return True
        if not _INCARNATION.fullmatch(incarnation):
            return True  # not one of ours: never taken for a crash here
        try:
            fd = os.open(self.path(incarnation), os.O_RDWR)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: leave it to the staleness rule
        try:
            return not _lock(fd)
        finally:
            os.close(fd)

    def sweep(self) -> int:
        """Delete the lock files of incarnations that are gone; returns how many."""
        removed = 0
        with contextlib.suppress(OSError):
            for path in self.directory.glob(f"{PREFIX}*{SUFFIX}"):
                incarnation = path.name[len(PREFIX) : -len(SUFFIX)]
                if _INCARNATION.fullmatch(incarnation) and not self.is_alive(incarnation):
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed += 1
        return removed
