"""Supervision of a real process: the fake ``ollama`` executable (tests/fakes/ollama) on PATH."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from server.errors import Conflict, Unavailable
from server.services.ollama_daemon import (
    OllamaDaemon,
    RotatingLog,
    bind_address,
    find_ollama_binary,
    probe,
    write_pid_file,
)
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama

FAKE_BIN = Path(__file__).resolve().parents[2] / "fakes" / "ollama"
REPO = Path(__file__).resolve().parents[3]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on PATH holding ``ollama`` -> the fake executable."""
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "ollama").symlink_to(FAKE_BIN)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_OLLAMA_REPO", str(REPO))
    return directory


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def daemon_settings(make_settings: Callable[..., Settings], port: int) -> Callable[..., Settings]:
    def make(**overrides) -> Settings:
        values = {
            "ollama_url": f"http://127.0.0.1:{port}",
            "ollama_restart_backoff": 0.1,
            "ollama_restart_backoff_max": 1.0,
            "ollama_stop_grace": 5.0,
            "ollama_start_timeout": 30.0,
        }
        values.update(overrides)
        return make_settings(**values)

    return make


@pytest.fixture
def make_daemon(daemon_settings: Callable[..., Settings]) -> Iterator[Callable[..., OllamaDaemon]]:
    made: list[OllamaDaemon] = []

    def make(**overrides) -> OllamaDaemon:
        daemon = OllamaDaemon(daemon_settings(**overrides), binary_locations=[])
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()


def start_running(daemon: OllamaDaemon) -> int:
    daemon.start()
    assert daemon.wait_for(("running", "failed"), 30), daemon.status()
    status = daemon.status()
    assert status.state == "running", status
    assert status.pid is not None
    return status.pid


# --- discovery -------------------------------------------------------------------------------------


def test_binary_found_on_path_then_standard_locations(bin_dir: Path, tmp_path: Path, monkeypatch) -> None:
    assert find_ollama_binary(None, extra_locations=[]) == bin_dir / "ollama"
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert find_ollama_binary(None, extra_locations=[]) is None
    assert (
        find_ollama_binary(None, extra_locations=[tmp_path / "nope", bin_dir / "ollama"])
        == bin_dir / "ollama"
    )


def test_configured_binary_wins_and_must_be_executable(bin_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "custom-ollama"
    other.symlink_to(FAKE_BIN)
    assert find_ollama_binary(other, extra_locations=[]) == other
    not_exec = tmp_path / "not-exec"
    not_exec.write_text("#!/bin/sh\n")
    not_exec.chmod(stat.S_IRUSR | stat.S_IWUSR)
    # A configured path that is not executable is "not installed", even though PATH has one.
    assert find_ollama_binary(not_exec, extra_locations=[]) is None


def test_not_installed_when_no_binary(make_daemon, tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    daemon = make_daemon()
    with pytest.raises(Unavailable) as info:
        daemon.start()
    assert info.value.code == "ollama_not_installed"
    status = daemon.status(refresh=True)
    assert status.state == "not_installed"
    assert status.managed is False
    assert "no `ollama` executable" in (status.last_error or "")


def test_bind_address_is_always_loopback() -> None:
    assert bind_address("http://127.0.0.1:11434") == "127.0.0.1:11434"
    assert bind_address("http://localhost:5000") == "127.0.0.1:5000"
    assert bind_address("http://[::1]:7000") == "[::1]:7000"


# --- spawn, readiness, environment ----------------------------------------------------------------


def test_spawn_and_readiness(make_daemon, bin_dir: Path, port: int, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_ORIGINS", "*")
    daemon = make_daemon(ollama_models_dir=bin_dir.parent / "models")
    pid = start_running(daemon)
    status = daemon.status()
    assert status.managed is True
    assert status.version == "0.12.0"
    assert status.url == f"http://127.0.0.1:{port}"
    assert status.binary == str(bin_dir / "ollama")
    assert status.uptime_s is not None and status.uptime_s >= 0
    assert probe(status.url)
    env = psutil.Process(pid).environ()
    assert env["OLLAMA_HOST"] == f"127.0.0.1:{port}"
    assert "OLLAMA_ORIGINS" not in env
    assert env["OLLAMA_MODELS"] == str(bin_dir.parent / "models")
    # Its own session and process group, not ours.
    assert os.getpgid(pid) == pid != os.getpgid(0)
    # PID file names the child; its log was captured into <log dir>/ollama.log.
    assert daemon.pid_file.exists() and str(pid) in daemon.pid_file.read_text()
    assert wait_until(lambda: any("Listening on" in line for line in daemon.tail_logs(50)), 5)
    # start() again is idempotent.
    assert daemon.start().pid == pid


def test_configured_binary_setting_is_used(make_daemon, tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    binary = tmp_path / "elsewhere" / "ollama"
    binary.parent.mkdir()
    binary.symlink_to(FAKE_BIN)
    monkeypatch.setenv("FAKE_OLLAMA_REPO", str(REPO))
    daemon = make_daemon(ollama_bin=binary)
    start_running(daemon)
    assert daemon.status().binary == str(binary)


# --- crash, restart, give up, port conflict -------------------------------------------------------


def test_crash_detected_and_restarted_with_backoff(make_daemon, bin_dir: Path) -> None:
    daemon = make_daemon()
    pid = start_running(daemon)
    os.kill(pid, signal.SIGKILL)
    # Noticed within 2 s: the state leaves "running" (crashed, then starting again).
    assert wait_until(lambda: daemon.status().state != "running" or daemon.status().pid != pid, 2.0)
    assert wait_until(lambda: daemon.status().state == "running" and daemon.status().pid != pid, 30)
    status = daemon.status()
    assert status.restart_count == 1
    assert "SIGKILL" in (status.last_error or "")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert str(status.pid) in daemon.pid_file.read_text()


def test_gives_up_after_repeated_crashes(make_daemon, bin_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_OLLAMA_CRASH_AFTER", "0.2")
    daemon = make_daemon(ollama_max_restarts=2, ollama_restart_backoff=0.05)
    daemon.start()
    assert daemon.wait_for(("failed",), 60), daemon.status()
    status = daemon.status()
    assert status.restart_count == 2
    assert status.managed is False
    assert "gave up after 2 restarts" in (status.last_error or "")
    assert "code 2" in (status.last_error or "")
    assert not daemon.pid_file.exists()


def test_port_in_use_exit_1_is_reported_naming_the_port(make_daemon, bin_dir: Path, port: int) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        daemon = make_daemon()
        daemon.start()
        assert daemon.wait_for(("failed",), 30), daemon.status()
    status = daemon.status()
    assert "port conflict" in (status.last_error or "")
    assert str(port) in (status.last_error or "")
    assert status.restart_count == 0
    assert wait_until(lambda: any("address already in use" in line for line in daemon.tail_logs(20)), 5)


# --- adopt external --------------------------------------------------------------------------------


def test_adopts_an_external_ollama_and_never_stops_it(make_daemon, bin_dir: Path) -> None:
    with FakeOllama() as fake:
        daemon = make_daemon(ollama_url=fake.url)
        status = daemon.start()
        assert status.state == "external"
        assert status.managed is False
        assert status.pid is None
        assert status.version == "0.12.0"
        assert daemon.stop().state == "external"
        with pytest.raises(Conflict):
            daemon.restart()
        daemon.close()
        assert probe(fake.url)
        assert not daemon.pid_file.exists()
        assert [p for p in psutil.Process().children(recursive=True) if "serve" in p.cmdline()] == []
    # Gone: the next refresh says stopped (the binary is installed).
    assert daemon.status(refresh=True).state == "stopped"


# --- stop: whole group, no orphans ----------------------------------------------------------------


@pytest.fixture
def runner_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``ollama`` that, like the real one, leaves a "runner" child in its process group."""
    directory = tmp_path / "runner-bin"
    directory.mkdir()
    script = directory / "ollama"
    script.write_text(f'#!/bin/sh\nsleep 300 &\nexec "{FAKE_BIN}" "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_OLLAMA_REPO", str(REPO))
    return script


def test_clean_stop_leaves_no_process_of_the_group(make_daemon, runner_bin: Path) -> None:
    daemon = make_daemon()
    pid = start_running(daemon)
    assert len(group_members(pid)) >= 2  # serve + its runner
    status = daemon.stop()
    assert status.state == "stopped"
    assert status.managed is False and status.pid is None
    assert group_members(pid) == []
    assert not daemon.pid_file.exists()


def test_crash_kills_orphaned_runners_before_restart(make_daemon, runner_bin: Path) -> None:
    daemon = make_daemon()
    pid = start_running(daemon)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: group_members(pid) == [], 5)
    assert wait_until(lambda: daemon.status().state == "running" and daemon.status().pid != pid, 30)


def test_sigterm_ignored_then_killed_after_grace(make_daemon, tmp_path: Path, monkeypatch) -> None:
    directory = tmp_path / "stubborn-bin"
    directory.mkdir()
    script = directory / "ollama"
    # The leader ignores SIGTERM (the API server in the background does stop on it).
    script.write_text(
        f'#!/bin/sh\ntrap \'\' TERM\n"{sys.executable}" "{FAKE_BIN}" "$@" &\nwhile :; do sleep 0.1; done\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_OLLAMA_REPO", str(REPO))
    daemon = make_daemon(ollama_stop_grace=0.5)
    pid = start_running(daemon)
    assert daemon.stop().state == "stopped"
    assert group_members(pid) == []


# --- stale PID file --------------------------------------------------------------------------------


def test_stale_child_from_pid_file_is_ended(make_daemon, bin_dir: Path, port: int) -> None:
    daemon = make_daemon()
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}"}
    stale = subprocess.Popen(  # a child of "a previous run" still holding the port
        [str(bin_dir / "ollama"), "serve"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: probe(f"http://127.0.0.1:{port}"), 30)
        write_pid_file(daemon.pid_file, stale.pid, bin_dir / "ollama")
        new_pid = start_running(daemon)
        assert stale.wait(10) is not None
        assert new_pid != stale.pid
        assert daemon.status().managed is True  # ours now, not "external"
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait()


def test_pid_file_of_an_unrelated_process_is_left_alone(make_daemon, bin_dir: Path) -> None:
    daemon = make_daemon()
    other = subprocess.Popen(["sleep", "60"])
    try:
        write_pid_file(daemon.pid_file, other.pid, bin_dir / "ollama")  # right pid, but not `ollama serve`
        start_running(daemon)
        assert other.poll() is None
        # A recycled pid: same number, different start time.
        daemon.stop()
        daemon.pid_file.write_text(
            json.dumps(
                {"pid": other.pid, "create_time": 1.0, "binary": str(bin_dir / "ollama"), "cmdline": []}
            )
        )
        start_running(daemon)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


# --- logs ------------------------------------------------------------------------------------------


def test_rotating_log_rotates_by_size_and_tails(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "logs" / "ollama.log", max_bytes=200, backups=2)
    for i in range(40):
        log.write(f"line {i:03d} \x1b[31mred\x1b[0m\n".encode())
    log.close()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["ollama.log", "ollama.log.1", "ollama.log.2"]
    assert all((tmp_path / "logs" / f).stat().st_size <= 200 for f in files)
    tail = log.tail(3)
    assert tail == ["line 037 red", "line 038 red", "line 039 red"]
    assert len(log.tail(1000)) < 40  # the oldest lines were rotated away
