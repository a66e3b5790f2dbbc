"""Handing freed heap memory back to the operating system (glibc's malloc; a no-op elsewhere).

Why: the soak (``bench/soak.py``) showed the server's RSS growing by about 3 MiB a minute under a steady
load, while everything the process *uses* stayed flat: Python's own heap
(tracemalloc), SQLite's memory (``sqlite3_memory_used``: the connections' page caches, a few MiB) and the
C heap in use (``mallinfo2().uordblks``). What grew was the C heap that was free but kept by malloc
(``fordblks``): about 40 MiB after one minute of load and rising, most of it in the per-thread arenas of
the worker threads that run the database work (two of them held 19 MiB each, 99 % free). Two glibc
behaviours keep it:

* the mmap threshold is dynamic: after a large block (a result set, a JSON body, a backup buffer) is
  freed, glibc raises the threshold to that block's size (up to 32 MiB) and the trim threshold to twice
  that, so later large blocks come from the arenas and their memory stays there after ``free``;
* free pages between live blocks (fragmentation) are never returned by ``free`` at all, only by
  ``malloc_trim``.

So the server pins the mmap threshold at glibc's own starting value (128 KiB: a large block is its own
mapping again, returned at ``free``), caps the arenas at ``ARENA_MAX`` (each worker thread would otherwise
get one of its own, up to 8 per core, each holding its own free pages: with the cap the soak's RSS grew by
5.0 % in 12 minutes instead of 7.4 %, peak 159 MiB instead of 171), and calls ``malloc_trim(0)`` every
``memory_trim_seconds`` in a worker thread (it walks every arena and releases their free pages; a few
milliseconds). Both are set up by the lifespan (:func:`start`), never at import. The desktop app, which
runs this server in its own process, trims once more after its start-up (``desktop/memory.py``).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import platform
from collections.abc import Callable
from typing import TYPE_CHECKING

from server import aio

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger(__name__)

#: mallopt() parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
#: glibc's default (and starting) mmap and trim thresholds; pinning them turns the dynamic rise off.
THRESHOLD_BYTES = 128 * 1024
#: At most this many malloc arenas (glibc's default is 8 per core, one more for each thread that meets a
#: locked one). The worker threads mostly take turns on the GIL, so extra arenas bring little speed and
#: each keeps its own free pages between trims.
ARENA_MAX = 2


def _libc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the only one with ``malloc_trim``/these ``mallopt`` numbers)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: the C library it runs on
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def available() -> bool:
    """Whether this process's allocator can be tuned and trimmed (glibc on Linux)."""
    return _libc() is not None


def tune_allocator() -> bool:
    """Pin glibc's mmap and trim thresholds (see the module docstring). Returns whether it applied."""
    libc = _libc()
    if libc is None:
        return False
    ok = (
        bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))
        and bool(libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES))
        and bool(libc.mallopt(M_ARENA_MAX, ARENA_MAX))
    )
    if not ok:
        log.warning("could not set the malloc thresholds")
    return ok


def trim() -> bool:
    """Return the free pages of every malloc arena to the OS (blocking: a worker thread). Returns whether
    any memory was released; ``False`` where the allocator is not glibc."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


class MemoryTrimmer:
    """Calls ``trim`` every ``interval`` seconds in a worker thread until stopped."""

    def __init__(self, interval: float, trim: Callable[[], bool] = trim) -> None:
        self.interval = interval
        self._trim = trim
        self._task: asyncio.Task[None] | None = None
        #: How many trims ran (what the tests count).
        self.runs = 0

    def start(self) -> None:
        if self._task is None and self.interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="modeltrain-memory-trim")

    @property
    def running(self) -> bool:
        return self._task is not None

    async def stop(self) -> None:
        task, self._task = self._task, None
        await aio.cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self._trim)
            except Exception:  # never let one failed trim end the loop
                log.exception("malloc_trim failed")
            self.runs += 1


async def start(runtime: Runtime) -> MemoryTrimmer | None:
    """Tune the allocator and start the periodic trim (glibc only; ``memory_trim_seconds`` 0 turns both
    off)."""
    interval = runtime.settings.memory_trim_seconds
    if interval <= 0 or not available():
        return None
    tune_allocator()
    runtime.memory_trimmer = MemoryTrimmer(interval)
    runtime.memory_trimmer.start()
    return runtime.memory_trimmer


async def stop(runtime: Runtime) -> None:
    if runtime.memory_trimmer is not None:
        await runtime.memory_trimmer.stop()
