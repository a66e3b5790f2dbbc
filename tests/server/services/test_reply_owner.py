"""services/reply_owner.py: which streaming replies belong to a dead run of this instance (security E5)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from server.services import reply_owner
from server.services.reply_owner import Incarnation
from server.settings import Settings

HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_the_instance_is_the_host_and_data_dir_across_runs(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    a, b = make_settings(data_dir=tmp_path / "a"), make_settings(data_dir=tmp_path / "b")
    first, second = Incarnation(a), Incarnation(a)
    assert first.instance_id == second.instance_id == reply_owner.instance_id(a)
    assert first.id != second.id  # a new incarnation per process
    assert reply_owner.instance_id(b) != reply_owner.instance_id(a)
    # the instance name (default <hostname>:<pid>) changes with every start; the identity does not
    assert (
        reply_owner.instance_id(make_settings(data_dir=tmp_path / "a", instance_name="x"))
        == first.instance_id
    )


def test_lock_file_is_private_and_removed_at_release(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    inc = Incarnation(make_settings(data_dir=tmp_path / "d"))
    assert inc.claim() and inc.claimed
    path = inc.path(inc.id)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    other = Incarnation(make_settings(data_dir=tmp_path / "d"))
    assert other.is_alive(inc.id)  # held: alive
    inc.release()
    assert not path.exists() and not inc.claimed
    assert not other.is_alive(inc.id)  # gone: dead


def test_a_killed_process_releases_its_lock(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    me = Incarnation(make_settings(data_dir=tmp_path / "d"))
    assert me.claim()
    dead_id = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(me.path(dead_id))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert me.is_alive(dead_id)
        assert me.sweep() == 0 and me.path(dead_id).exists()  # a live one's file is kept
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert not me.is_alive(dead_id)
    assert me.sweep() == 1 and not me.path(dead_id).exists()
    assert me.path(me.id).exists() and me.is_alive(me.id)  # our own stays
    me.release()


def test_ids_that_are_not_ours_are_never_judged(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    me = Incarnation(make_settings(data_dir=tmp_path / "d"))
    assert me.claim()
    for odd in ("../../etc/passwd", "", "ABC", "x" * 32):
        assert me.is_alive(odd)
    me.release()


def test_an_unwritable_data_dir_names_no_owner(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    blocked = tmp_path / "d"
    blocked.mkdir()
    (blocked / reply_owner.RUN_DIR).write_text("a file where the folder should be")
    inc = Incarnation(make_settings(data_dir=blocked))
    assert not inc.claim() and not inc.claimed
    inc.release()  # harmless
