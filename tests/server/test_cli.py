"""The real ``modeltrain`` command in subprocesses: serve, port in use, bad settings, operator commands."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

PY = sys.executable


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MODELTRAIN_")
        and k not in ("DATABASE_URL", "SECRET_KEY", "INITIAL_ADMIN_PASSWORD", "LOG_LEVEL", "CORS_ORIGINS")
    }
    env.update({"MODELTRAIN_DATA_DIR": str(tmp_path / "data"), **extra})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(
    args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "server", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, input=stdin
    )


def test_bad_setting_is_one_line_without_traceback(tmp_path: Path) -> None:
    r = _run(["serve"], _env(tmp_path, SECRET_KEY="changeme"), tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "SECRET_KEY" in lines[0] and "Traceback" not in r.stderr


def test_port_in_use_says_so_and_exits_non_zero(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _run(["serve", "--port", str(port)], _env(tmp_path), tmp_path)
    assert r.returncode == 1
    assert f"port {port}" in r.stderr and "already in use" in r.stderr and "Traceback" not in r.stderr


def test_serve_starts_prints_the_initial_password_once_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [PY, "-m", "server", "serve", "--port", str(port)],
        env=_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.05)  # polling interval while waiting for the port to open, not synchronisation
        r = httpx.get(f"http://127.0.0.1:{port}/api/health")
        assert r.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/api/health/ready").json()["status"] == "ready"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why (systemd: clean).
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in err
    password_file = tmp_path / "data" / "initial_admin_password.txt"
    password = password_file.read_text().split("password: ")[1].split()[0]
    assert err.count(password) == 1
    log_text = (tmp_path / "data" / "logs" / "app.log").read_text()
    assert password not in log_text


def test_migrate_create_admin_and_reset_password(tmp_path: Path) -> None:
    env = _env(tmp_path)
    r = _run(["migrate"], env, tmp_path)
    assert r.returncode == 0 and "-> " in r.stdout
    r = _run(
        ["create-admin", "ops@example.com", "--password-stdin"],
        env,
        tmp_path,
        stdin="an-operator-passphrase\n",
    )
    assert r.returncode == 0, r.stderr
    r = _run(["create-admin", "ops2@example.com", "--password-stdin"], env, tmp_path, stdin="short\n")
    assert r.returncode != 0 and "at least" in r.stderr and "Traceback" not in r.stderr
    r = _run(["reset-password", "ops@example.com"], env, tmp_path)
    assert r.returncode == 0 and "new temporary password" in r.stdout
    r = _run(["reset-password", "nobody@example.com"], env, tmp_path)
    assert r.returncode == 1 and "no user" in r.stderr


@pytest.mark.parametrize("args", [["--version"], ["serve", "--help"]])
def test_help_and_version(tmp_path: Path, args: list[str]) -> None:
    r = _run(args, _env(tmp_path), tmp_path)
    assert r.returncode == 0 and ("modeltrain" in r.stdout)
