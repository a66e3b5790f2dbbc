"""Server-core figures: cold start to healthy, and login / users/me latency at 1 and 20 clients.

Baselines measured in the same run: interpreter start with the server's imports (for cold start),
one Argon2id verification (for login) and GET /api/health (for users/me).

    .venv/bin/python bench/server_core.py [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

PASSWORD = "bench-initial-password-1"
NEW_PASSWORD = "bench-password-changed-2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def start_server(data_dir: Path, port: int) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "MODELTRAIN_DATA_DIR": str(data_dir), "INITIAL_ADMIN_PASSWORD": PASSWORD}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with httpx.Client() as c:
        while True:
            try:
                if c.get(f"http://127.0.0.1:{port}/api/health", timeout=0.5).status_code == 200:
                    return proc, time.perf_counter() - t0
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise SystemExit("server exited during start-up")
            time.sleep(0.005)


def measure(fn, n: int, concurrency: int) -> list[float]:
    def one(_: int) -> float:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1000

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(n)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import server.app, uvicorn, sqlalchemy, alembic"], check=True)
    import_baseline = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        starts = []
        for i in range(3):
            port = free_port()
            proc, elapsed = start_server(Path(tmp) / f"cold{i}", port)
            starts.append(elapsed)
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        port = free_port()
        proc, _ = start_server(Path(tmp) / "main", port)
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, limits=httpx.Limits(max_connections=64)) as c:
                r = c.post("/api/auth/login", json={"email": "admin@example.com", "password": PASSWORD})
                token = r.json()["access_token"]
                r = c.post(
                    "/api/auth/password",
                    json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                    headers={"Authorization": f"Bearer {token}"},
                )
                token = r.json()["access_token"]
                auth = {"Authorization": f"Bearer {token}"}

                from server.security.passwords import hash_password, verify_password

                h = hash_password(NEW_PASSWORD)
                argon_ms = measure(lambda: verify_password(NEW_PASSWORD, h), 20, 1)

                def login() -> None:
                    resp = c.post(
                        "/api/auth/login", json={"email": "admin@example.com", "password": NEW_PASSWORD}
                    )
                    assert resp.status_code == 200, resp.text

                def me() -> None:
                    assert c.get("/api/users/me", headers=auth).status_code == 200

                def health() -> None:
                    assert c.get("/api/health").status_code == 200

                print(
                    f"cold start to healthy: median {statistics.median(starts) * 1000:.0f} ms "
                    f"(runs: {', '.join(f'{s * 1000:.0f}' for s in starts)} ms); "
                    f"import-only baseline {import_baseline * 1000:.0f} ms "
                    f"-> ratio {statistics.median(starts) / import_baseline:.2f}"
                )
                print(f"argon2id verify baseline: p50 {pct(argon_ms, 50):.1f} ms")
                for conc in (1, 20):
                    n_login = max(20, args.requests // 4)
                    lg = measure(login, n_login, conc)
                    hm = measure(health, args.requests, conc)
                    mm = measure(me, args.requests, conc)
                    print(
                        f"[{conc:>2} clients] login       p50 {pct(lg, 50):7.1f} ms"
                        f"  p99 {pct(lg, 99):7.1f} ms"
                        f"  (x{pct(lg, 50) / pct(argon_ms, 50):.2f} of one argon2 verify)"
                    )
                    print(
                        f"[{conc:>2} clients] users/me    p50 {pct(mm, 50):7.1f} ms"
                        f"  p99 {pct(mm, 99):7.1f} ms"
                        f"  (x{pct(mm, 50) / pct(hm, 50):.2f} of /api/health)"
                    )
                    print(
                        f"[{conc:>2} clients] health      p50 {pct(hm, 50):7.1f} ms"
                        f"  p99 {pct(hm, 99):7.1f} ms"
                    )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)


if __name__ == "__main__":
    main()
