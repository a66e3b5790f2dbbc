"""Requests/s and chat-stream overhead through nginx (packaging/nginx) with 1 and 2 app instances, against
talking to one instance directly — all measured in this run, on one private PostgreSQL.

    .venv/bin/python bench/nginx_throughput.py [--seconds 4] [--concurrency 16] [--streams 20]

Prints, for GET /api/health and an authenticated GET /api/users/me (a database read): requests/s
direct, via nginx -> 1 instance, via nginx -> 2 instances, and the ratios to direct. For a chat reply
of 200 tokens from a fake Ollama without delays: median time to the first delta and to the end, direct
and via nginx, and the difference (the proxy's overhead per stream).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.deploy.support import (
    first_model_id,
    iter_sse,
    json_headers,
    make_dist,
    sign_in_admin,
    start_nginx,
    start_serve,
)
from tests.fakes.fake_ollama import FakeOllama
from tests.server.pg_support import PostgresCluster

REPLY = " ".join(f"t{i}" for i in range(200))


def throughput(url: str, path: str, seconds: float, concurrency: int, headers: dict[str, str]) -> float:
    stop = time.monotonic() + seconds
    counts = [0] * concurrency
    errors: list[str] = []

    def worker(i: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=10) as c:
            while time.monotonic() < stop:
                r = c.get(path)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:100]}")
                    return
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{url}{path}: {errors[0]}")
    return sum(counts) / (time.monotonic() - started)


def stream_timings(url: str, token: str, model: str, n: int, origin: str | None) -> tuple[float, float]:
    first, total = [], []
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(n):
            begin = time.perf_counter()
            got_first = None
            with c.stream(
                "POST",
                "/api/chat",
                json={"model": model, "content": f"bench {i}"},
                headers=json_headers(origin, token),
            ) as r:
                assert r.status_code == 200, r.read()
                for name, _ in iter_sse(r):
                    if name == "delta" and got_first is None:
                        got_first = time.perf_counter() - begin
                    if name in ("done", "error"):
                        assert name == "done"
                        break
            first.append(got_first or 0.0)
            total.append(time.perf_counter() - begin)
    return statistics.median(first) * 1000, statistics.median(total) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--streams", type=int, default=20)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="modeltrain-bench-nginx-"))
    procs, proxies = [], []
    try:
        with PostgresCluster() as pg, FakeOllama(reply=REPLY) as fake:
            db = pg.new_database("bench")
            env = {
                "MODELTRAIN_TRUSTED_PROXIES": "127.0.0.1",
                "MODELTRAIN_OLLAMA_URL": fake.url,
                "MODELTRAIN_METRICS_ENABLED": "false",
                "LOG_LEVEL": "WARNING",
            }
            for name in ("a", "b"):
                procs.append(
                    start_serve(work / name, db, work / f"{name}.log", MODELTRAIN_INSTANCE_NAME=name, **env)
                )
            a, b = procs
            dist = make_dist(work / "web")
            one = start_nginx([a.url.removeprefix("http://")], dist)
            proxies.append(one)
            two = start_nginx([a.url.removeprefix("http://"), b.url.removeprefix("http://")], dist)
            proxies.append(two)
            with httpx.Client(base_url=a.url) as c:
                token = sign_in_admin(c)
                model = first_model_id(c, token)
            auth = json_headers(token=token)
            targets = [
                ("direct (1 instance)", a.url),
                ("nginx -> 1 instance", one.url),
                ("nginx -> 2 instances", two.url),
            ]
            print(
                f"nginx throughput: {args.concurrency} concurrent keep-alive clients, "
                f"{args.seconds:g} s per figure,"
                " 2 CPU cores shared by clients, nginx and the apps"
            )
            for label, path, headers in (
                ("GET /api/health", "/api/health", {}),
                ("GET /api/users/me (DB read)", "/api/users/me", auth),
            ):
                throughput(a.url, path, 0.5, 4, headers)  # warm-up
                rates = [
                    (name, throughput(url, path, args.seconds, args.concurrency, headers))
                    for name, url in targets
                ]
                base = rates[0][1]
                print(f"  {label}")
                for name, rate in rates:
                    print(f"    {name:<22} {rate:8.0f} req/s   x{rate / base:.2f} of direct")
            stream_timings(a.url, token, model, 2, None)  # warm-up
            d_first, d_total = stream_timings(a.url, token, model, args.streams, None)
            n_first, n_total = stream_timings(one.url, token, model, args.streams, one.url)
            print(f"  chat stream, 200 tokens, median of {args.streams}:")
            print(f"    direct               first delta {d_first:7.1f} ms   done {d_total:7.1f} ms")
            print(f"    nginx -> 1 instance  first delta {n_first:7.1f} ms   done {n_total:7.1f} ms")
            print(
                f"    overhead via nginx   first delta {n_first - d_first:+7.1f} ms   "
                f"done {n_total - d_total:+7.1f} ms"
                f"   (x{n_total / d_total:.2f})"
            )
    finally:
        for proxy in proxies:
            proxy.stop()
        for proc in procs:
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
