"""Handing freed heap memory back to the OS (services/memory.py): on glibc a trim returns the free pages
that ``free`` keeps (the soak's RSS growth), the periodic trimmer runs until stopped, and the lifespan
starts it only when ``memory_trim_seconds`` is above 0."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from server.runtime import Runtime
from server.security.network_guard import GuardPolicy
from server.services import memory
from server.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _fragment_a_thread_arena(mib: int) -> list[bytes]:
    """In a fresh thread (its own malloc arena, like the server's worker threads): allocate ``mib`` MiB
    in blocks below the mmap threshold, then free all but every 64th one. The survivors pin the freed
    blocks between them, so ``free`` alone cannot give that memory back."""
    kept: list[bytes] = []

    def work() -> None:
        blocks = [b"\x01" * (64 * 1024) for _ in range(mib * 16)]  # 64 KiB each, written, heap-allocated
        kept.extend(blocks[::64])
        blocks.clear()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return kept


def test_trim_gives_back_memory_that_free_keeps() -> None:
    if not memory.available():  # not glibc: nothing to tune or trim, and the functions say so
        assert memory.tune_allocator() is False
        assert memory.trim() is False
        return
    assert memory.tune_allocator() is True
    kept = _fragment_a_thread_arena(64)
    before = _rss_bytes()
    assert memory.trim() is True
    released = before - _rss_bytes()
    assert released > 32 * 2**20, f"only {released / 2**20:.1f} MiB released"
    assert len(kept) == 16


async def test_trimmer_runs_every_interval_until_stopped() -> None:
    calls = 0
    three = asyncio.Event()
    loop = asyncio.get_running_loop()

    def fake_trim() -> bool:  # runs in a worker thread, like the real one
        nonlocal calls
        calls += 1
        if calls == 3:
            loop.call_soon_threadsafe(three.set)
        return True

    trimmer = memory.MemoryTrimmer(0.01, trim=fake_trim)
    trimmer.start()
    assert trimmer.running
    await asyncio.wait_for(three.wait(), 10)
    await trimmer.stop()
    assert not trimmer.running
    stopped_at = trimmer.runs
    assert stopped_at >= 2
    await asyncio.sleep(0.05)  # no further trims once stopped (not a sync: checks nothing happens)
    assert trimmer.runs == stopped_at


async def test_a_failing_trim_does_not_end_the_loop() -> None:
    calls = 0
    again = asyncio.Event()
    loop = asyncio.get_running_loop()

    def flaky() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("boom")
        loop.call_soon_threadsafe(again.set)
        return False

    trimmer = memory.MemoryTrimmer(0.01, trim=flaky)
    trimmer.start()
    await asyncio.wait_for(again.wait(), 10)
    await trimmer.stop()
    assert calls >= 2


def _runtime(settings: Settings) -> Runtime:
    engine = create_engine("sqlite://")
    return Runtime(
        settings=settings, engine=engine, session_factory=sessionmaker(engine), guard=GuardPolicy()
    )


async def test_lifespan_start_respects_the_setting(make_settings: Callable[..., Settings]) -> None:
    off = _runtime(make_settings(memory_trim_seconds=0))
    assert await memory.start(off) is None
    assert off.memory_trimmer is None
    await memory.stop(off)  # nothing started: a no-op

    on = _runtime(make_settings(memory_trim_seconds=60))
    trimmer = await memory.start(on)
    try:
        if memory.available():
            assert trimmer is not None and trimmer.running and on.memory_trimmer is trimmer
        else:
            assert trimmer is None
    finally:
        await memory.stop(on)
    assert on.memory_trimmer is None or not on.memory_trimmer.running


def test_the_setting_is_bounded(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValidationError, match="memory_trim_seconds"):
        make_settings(memory_trim_seconds=-1)


#: Run in a fresh interpreter: the test process's own arena count depends on what ran before it.
_ARENAS_SCRIPT = """
import ctypes, sys, tempfile, threading
from pathlib import Path
from server.services import memory

def arenas() -> int:
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    report = Path(tempfile.mkdtemp()) / "malloc_info.xml"
    stream = libc.fopen(str(report).encode(), b"w")
    libc.malloc_info(0, stream)  # one <heap nr=...> per arena
    libc.fclose(stream)
    return report.read_text().count("<heap nr=")

if sys.argv[1] == "tuned":
    assert memory.tune_allocator()
barrier = threading.Barrier(8)
kept = []

def work() -> None:
    barrier.wait()  # eight threads allocate at once, as the server's worker threads do
    kept.append([b"x" * 4096 for _ in range(2000)])
    barrier.wait()

threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(arenas())
"""


def _arenas_after_eight_threads(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _ARENAS_SCRIPT, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    return int(done.stdout.strip())


def test_threads_share_a_bounded_number_of_arenas() -> None:
    """Each malloc arena keeps its own free pages until the next trim; by default glibc gives each new
    worker thread one (up to 8 per core). Tuned, the threads share ARENA_MAX of them."""
    if not memory.available():
        return
    assert _arenas_after_eight_threads("default") > memory.ARENA_MAX  # what the tuning is for
    assert _arenas_after_eight_threads("tuned") <= memory.ARENA_MAX
