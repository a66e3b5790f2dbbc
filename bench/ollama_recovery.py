"""Ollama supervision and pull-progress figures.

    .venv/bin/python bench/ollama_recovery.py [--kills 7] [--pulls 3] [--pull-tick 0.06]

1. Crash-to-running recovery of the supervised daemon, with the fake ``ollama`` executable
   (tests/fakes/ollama, a real process serving the fake API): ``kill -9`` of the child, then time until
   ``status`` says running again with a new pid (median of ``--kills``), split into detection time
   (kill -> state leaves "running") and the rest (back-off + spawn + readiness). Baseline measured in
   the same run: a cold ``start()`` of the same executable to running.
2. Pull-progress event rate through ``POST /api/ollama/pull`` (SSE) against the in-process fake Ollama
   with Ollama's ~60 ms tick. Baseline: the NDJSON progress lines/s of the same pull read directly
   from the fake, in the same run. The ratio shows whether ModelTrain forwards every upstream update.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.app import create_app
from server.services.ollama_daemon import OllamaDaemon
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama

ROOT = Path(__file__).resolve().parent.parent

SECRET = "bench-secret-x7Kq2mPz9vRt4nLw8sYb3cHd6fJg1aE5"
INITIAL = "initial-Admin-pass-9"
ADMIN = "correct-horse-battery-staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(predicate, timeout: float, interval: float = 0.005) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def recovery(tmp: Path, kills: int) -> None:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "ollama").symlink_to(ROOT / "tests" / "fakes" / "ollama")
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    os.environ["FAKE_OLLAMA_REPO"] = str(ROOT)
    settings = Settings(
        _env_file=None,
        data_dir=tmp / "data",
        secret_key=SECRET,
        ollama_url=f"http://127.0.0.1:{free_port()}",
        ollama_restart_backoff=0.5,
        ollama_stop_grace=5.0,
    )
    # stable_after=1 s: each kill hits a child that has been up for a while (an isolated crash, first
    # back-off step), not a crash loop whose back-off doubles.
    daemon = OllamaDaemon(settings, binary_locations=[], stable_after=1.0)
    try:
        cold = []
        for _ in range(3):
            t0 = time.perf_counter()
            daemon.start()
            assert daemon.wait_for(("running",), 60), daemon.status()
            cold.append(time.perf_counter() - t0)
            daemon.stop()
        daemon.start()
        assert daemon.wait_for(("running",), 60)
        detect, total = [], []
        for _ in range(kills):
            pid = daemon.status().pid
            assert pid is not None
            assert poll(lambda: (daemon.status().uptime_s or 0) >= 1.0, 10)
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            assert poll(lambda: daemon.status().state != "running", 10)
            detect.append(time.perf_counter() - t0)
            assert poll(lambda old=pid: daemon.status().state == "running" and daemon.status().pid != old, 60)
            total.append(time.perf_counter() - t0)
        status = daemon.status()
    finally:
        daemon.close()
    base = statistics.median(cold)
    med = statistics.median(total)
    print("1. crash-to-running recovery (fake `ollama serve`, kill -9)")
    print(f"   baseline cold start to running (median of 3):  {base * 1000:8.1f} ms")
    print(
        f"   crash detected (median of {kills}):                {statistics.median(detect) * 1000:8.1f} ms"
        f"   (max {max(detect) * 1000:.1f} ms; goal < 2000 ms)"
    )
    print(
        f"   restart back-off (first step):                 {settings.ollama_restart_backoff * 1000:8.1f} ms"
    )
    print(
        f"   crash -> running, median of {kills}:              {med * 1000:8.1f} ms   "
        f"({med / base:.2f}x cold start)"
    )
    print(f"   all recoveries (ms): {', '.join(f'{t * 1000:.0f}' for t in total)}")
    print(f"   restart_count after the run: {status.restart_count}")


def direct_rate(fake: FakeOllama, name: str) -> tuple[float, int]:
    with httpx.Client(timeout=60, trust_env=False) as client:
        t0 = time.perf_counter()
        lines = 0
        with client.stream("POST", fake.url + "/api/pull", json={"model": name}) as r:
            for line in r.iter_lines():
                if line.strip():
                    lines += 1
        return lines / (time.perf_counter() - t0), lines


def sse_rate(client: TestClient, token: str, name: str) -> tuple[float, int, float]:
    t0 = time.perf_counter()
    progress = 0
    first = None
    with client.stream(
        "POST", "/api/ollama/pull", json={"name": name}, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.status_code == 200, r.read()
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                if first is None:
                    first = time.perf_counter() - t0
                if event == "progress":
                    progress += 1
                if event in ("done", "error"):
                    assert event == "done", line
                    break
    return progress / (time.perf_counter() - t0), progress, first or 0.0


def pull_rate(tmp: Path, pulls: int, tick: float) -> None:
    with FakeOllama(pull_tick=tick) as fake:
        settings = Settings(
            _env_file=None,
            data_dir=tmp / "pull-data",
            secret_key=SECRET,
            ollama_url=fake.url,
            initial_admin_password=INITIAL,
            ollama_disk_reserve_bytes=0,
        )
        direct, sse, firsts = [], [], []
        with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
            client.app.state.runtime.ollama_pulls.free_space = lambda path: 10**15
            token = client.post(
                "/api/auth/login", json={"email": "admin@example.com", "password": INITIAL}
            ).json()["access_token"]
            token = client.post(
                "/api/auth/password",
                json={"current_password": INITIAL, "new_password": ADMIN},
                headers={"Authorization": f"Bearer {token}"},
            ).json()["access_token"]
            for i in range(pulls):
                names = ("tinyllama", "smollm2:135m")
                name = names[i % 2]
                fake.models.pop(f"{name}:latest" if ":" not in name else name, None)
                rate, lines = direct_rate(fake, name)
                direct.append((rate, lines))
                fake.models.pop(f"{name}:latest" if ":" not in name else name, None)
                rate, events, first = sse_rate(client, token, name)
                sse.append((rate, events))
                firsts.append(first)
    d = statistics.median(r for r, _ in direct)
    s = statistics.median(r for r, _ in sse)
    print(f"2. pull-progress event rate (fake Ollama, {tick * 1000:.0f} ms tick, {pulls} pulls)")
    print(f"   baseline upstream NDJSON lines/s (direct):     {d:8.1f}   ({direct[0][1]} lines per pull)")
    print(
        f"   ModelTrain SSE progress events/s:              {s:8.1f}   ({sse[0][1]} events per pull;"
        f" {s / d:.2f}x upstream)"
    )
    print(f"   first SSE event after POST (median):           {statistics.median(firsts) * 1000:8.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=7)
    parser.add_argument("--pulls", type=int, default=4)
    parser.add_argument("--pull-tick", type=float, default=0.06)
    args = parser.parse_args()
    logging.getLogger("server").setLevel(logging.ERROR)  # expected crash warnings would clutter the figures
    with tempfile.TemporaryDirectory(prefix="mt-bench-ollama-") as tmp:
        recovery(Path(tmp), args.kills)
        pull_rate(Path(tmp), args.pulls, args.pull_tick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
