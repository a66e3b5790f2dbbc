"""Soak (security.md G3, scaled to one machine): mixed load on a real ModelTrain server for 30 minutes.

``--clients`` concurrent users, each looping over a weighted mix with a short think time: web chats
(POST /api/chat, a new conversation or a follow-up in one of the recent ones), /v1/chat/completions
streamed with an API key, the conversation list, a conversation's detail, and full-text search. 10 % of
the streams (web and /v1) hang up mid-reply. A backup (POST /api/backups) every 5 minutes.

The server's RSS, open file descriptors (psutil num_fds), threads (the server exposes no asyncio task
count; threads include the anyio worker pool) and the WAL file size are read at two quiet points: after a
warm-up under the same load (the start), every 5 minutes, and at the end, each with the load paused and
the in-flight requests drained (a few seconds); the growth from start to end is printed. The admin signs
in again every 10 minutes (an access token lives 30 minutes; the web UI refreshes it the same way).

    .venv/bin/python bench/soak.py [--minutes 30] [--clients 20] [--warmup 60] [--report-every 300]

The quiet RSS at the report nearest the middle splits the run in two halves: their slopes (MiB/min) tell
a warm-up that levels off from a steady leak.

Targets: RSS growth <= 10 %, no growth in open files or threads, WAL bounded, no error.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat_common import (
    NEW_PASSWORD,
    UPSTREAM_MODEL,
    ModelTrain,
    model_ids,
    start_fake,
    start_modeltrain,
)
from bench.gateway_overhead import sse_stream
from bench.load_common import Probe, auth, chat_stream, growth, probe, prompt, timed_get

MIX = [("chat", 35), ("v1", 15), ("list", 20), ("detail", 15), ("search", 15)]
HANG_UP = 0.10


class Soak:
    def __init__(self, mt: ModelTrain, model_id: str, key: str, think: float, clients: int) -> None:
        self.mt = mt
        self.limits = httpx.Limits(max_connections=clients * 2 + 10, max_keepalive_connections=clients * 2)
        self.http = self.new_client()
        self.model_id = model_id
        self.key = key
        self.think = think
        self.gate = asyncio.Event()
        self.gate.set()
        self.stopping = False
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.first_errors: list[str] = []
        self.recent: list[str] = []
        self.hung_up = 0

    def new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=120, limits=self.limits)

    def error(self, kind: str, what: str) -> None:
        self.errors[kind] += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(f"{kind}: {what[:160]}")

    async def one(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        hang = rng.random() < HANG_UP
        if kind == "chat":
            conv = rng.choice(self.recent) if self.recent and rng.random() < 0.5 else None
            out = await chat_stream(client, self.mt, self.model_id, prompt(rng), conv, 3 if hang else 0)
            if not out.ok:
                self.error(kind, out.error)
            if out.hung_up:
                self.hung_up += 1
            if out.conversation_id and conv is None:
                self.recent = [*self.recent, out.conversation_id][-30:]
        elif kind == "v1":
            url = f"{self.mt.url}/v1/chat/completions"
            if hang:
                body = {"model": UPSTREAM_MODEL, "messages": [{"role": "user", "content": prompt(rng)}]}
                body["stream"] = True
                headers = {"Authorization": f"Bearer {self.key}"}
                async with client.stream("POST", url, json=body, headers=headers) as r:
                    if r.status_code != 200:
                        await r.aread()
                        self.error(kind, f"HTTP {r.status_code} {r.text}")
                    else:
                        n = 0
                        async for _ in r.aiter_lines():
                            n += 1
                            if n >= 6:
                                break
                        self.hung_up += 1
            else:
                res = await sse_stream(client, url, self.key, UPSTREAM_MODEL, prompt(rng))
                if not res.ok:
                    self.error(kind, res.error)
        else:
            if kind == "list":
                path = f"/api/conversations?page={rng.randint(1, 3)}&size=50"
            elif kind == "search":
                path = f"/api/conversations/search?q={rng.choice(prompt(rng).split())}"
            else:
                if not self.recent:
                    return
                path = f"/api/conversations/{rng.choice(self.recent)}"
            _, status, body = await timed_get(client, self.mt, path)
            if status != 200:
                self.error(kind, f"HTTP {status} {body}")
        self.ops[kind] += 1

    async def client(self, idx: int) -> None:
        rng = random.Random(idx)
        while not self.stopping:
            await self.gate.wait()
            if self.stopping:
                return
            self.in_flight += 1
            try:
                await self.one(self.http, rng)
            except (httpx.HTTPError, ValueError) as exc:
                self.error("transport", repr(exc))
            finally:
                self.in_flight -= 1
                if not self.in_flight:
                    self.idle.set()
            await asyncio.sleep(rng.uniform(0, 2 * self.think))

    async def quiet_probe(self) -> Probe:
        """Pause the clients, let the in-flight requests finish, close the clients' keep-alive connections
        (so open sockets do not count as server growth) and let the server settle, then probe."""
        self.gate.clear()
        if self.in_flight:
            self.idle.clear()
            await self.idle.wait()
        await self.http.aclose()
        await asyncio.sleep(3)
        result = probe(self.mt)
        self.http = self.new_client()
        return result

    async def sign_in(self) -> None:
        r = await self.http.post(
            f"{self.mt.url}/api/auth/login", json={"email": "admin@example.com", "password": NEW_PASSWORD}
        )
        if r.status_code != 200:
            self.error("sign-in", f"HTTP {r.status_code} {r.text}")
        else:
            self.mt.token = r.json()["access_token"]

    async def backup(self) -> float:
        t0 = time.perf_counter()
        r = await self.http.post(f"{self.mt.url}/api/backups", json={}, headers=auth(self.mt), timeout=600)
        if r.status_code != 201:
            self.error("backup", f"HTTP {r.status_code} {r.text}")
        return time.perf_counter() - t0


def create_key(mt: ModelTrain) -> str:
    with httpx.Client(base_url=mt.url, headers=auth(mt), timeout=30) as c:
        r = c.post("/api/keys", json={"name": "soak"})
        r.raise_for_status()
        return str(r.json()["key"])


async def main_async(
    minutes: float, clients: int, warmup: float, think: float, backup_every: float, report_every: float
) -> int:
    fake_proc, fake_url = start_fake(1 / 30, reply_tokens=60)
    mt = start_modeltrain(fake_url)
    try:
        model_id = model_ids(mt)[fake_url]
        key = create_key(mt)
        idle = probe(mt)
        soak = Soak(mt, model_id, key, think, clients)
        try:
            tasks = [asyncio.create_task(soak.client(i)) for i in range(clients)]
            await asyncio.sleep(warmup)
            start = await soak.quiet_probe()
            ops_at_start = sum(soak.ops.values())
            soak.gate.set()
            t0 = time.monotonic()
            end_at = t0 + minutes * 60
            next_backup = t0 + backup_every
            next_report = t0 + report_every
            next_login = t0 + 600
            backups: list[float] = []
            wal_peak = start.wal_kib
            quiet: list[tuple[float, float]] = []  # (minute, quiet RSS) at each report
            rss_peak = start.rss
            print(f"idle before load: {idle.line()}", flush=True)
            print(f"start (after {warmup:.0f} s warm-up, quiet): {start.line()}", flush=True)
            while (now := time.monotonic()) < end_at:
                if now >= next_backup:
                    backups.append(await soak.backup())
                    next_backup += backup_every
                p = probe(mt)
                wal_peak = max(wal_peak, p.wal_kib)
                rss_peak = max(rss_peak, p.rss)
                if now >= next_login:  # the access token lives 30 minutes: sign in again, as the UI refreshes
                    await soak.sign_in()
                    next_login += 600
                if now >= next_report:
                    q = await soak.quiet_probe()
                    soak.gate.set()
                    print(
                        f"  {(now - t0) / 60:4.0f} min: under load {p.rss:.1f} MiB; quiet {q.line()}; "
                        f"ops {sum(soak.ops.values())}, errors {sum(soak.errors.values())}",
                        flush=True,
                    )
                    quiet.append(((now - t0) / 60, q.rss))
                    next_report += report_every
                await asyncio.sleep(1)
            end = await soak.quiet_probe()
            soak.stopping = True
            soak.gate.set()
            await asyncio.gather(*tasks)
        finally:
            await soak.http.aclose()
    finally:
        mt.stop()
        fake_proc.terminate()
        fake_proc.wait(timeout=10)
    ops = sum(soak.ops.values()) - ops_at_start
    print(f"end (after {minutes:g} min, quiet): {end.line()}")
    print(
        f"clients {clients}, think {think} s; operations in the measured window: {ops} "
        f"({ops / (minutes * 60):.1f}/s); by kind (whole run): {dict(soak.ops)}; "
        f"hung up mid-stream: {soak.hung_up}"
    )
    print(
        "backups: "
        + (
            f"{len(backups)}, {min(backups):.1f}-{max(backups):.1f} s each under load"
            if backups
            else "none (run shorter than one interval)"
        )
    )
    print(f"errors: {sum(soak.errors.values())} {dict(soak.errors)}")
    for line in soak.first_errors:
        print(f"  {line}")
    print(
        f"RSS: start {start.rss:.1f} MiB, end {end.rss:.1f} MiB ({growth(start.rss, end.rss)}), "
        f"peak {rss_peak:.1f}"
    )
    print(
        f"open fds: start {start.fds}, end {end.fds} ({end.fds - start.fds:+d}); idle before load {idle.fds}"
    )
    changed = sorted(k for k in start.fd_kinds | end.fd_kinds if start.fd_kinds[k] != end.fd_kinds[k])
    if changed:
        print(
            "  changed: "
            + ", ".join(f"{k} {start.fd_kinds[k]} -> {end.fd_kinds[k]}" for k in changed)
            + " (the database pool keeps up to 10 connections; the upstream pool keeps idle connections"
            " to Ollama up to 30 s)"
        )
    quiet.append((minutes, end.rss))
    mid = min(quiet, key=lambda q: abs(q[0] - minutes / 2))
    if 0 < mid[0] < minutes:
        first, second = (mid[1] - start.rss) / mid[0], (end.rss - mid[1]) / (minutes - mid[0])
        print(
            f"RSS slope: first half (0-{mid[0]:.1f} min) {first:+.2f} MiB/min, "
            f"second half ({mid[0]:.1f}-{minutes:g} min) {second:+.2f} MiB/min"
        )
    print(f"threads: start {start.threads}, end {end.threads} ({end.threads - start.threads:+d})")
    print(f"WAL: start {start.wal_kib:.0f} KiB, end {end.wal_kib:.0f} KiB, peak {wal_peak:.0f} KiB")
    print(f"DB file: start {start.db_kib:.0f} KiB, end {end.db_kib:.0f} KiB")
    print("targets: RSS growth <= 10 %, no growth in open files or threads, WAL bounded, no error")
    return 1 if soak.errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=60, help="seconds of load before the start probe")
    parser.add_argument("--think", type=float, default=0.5, help="mean pause between a client's requests (s)")
    parser.add_argument("--backup-every", type=float, default=300, help="seconds")
    parser.add_argument("--report-every", type=float, default=300, help="seconds between quiet probes")
    args = parser.parse_args()
    return asyncio.run(
        main_async(args.minutes, args.clients, args.warmup, args.think, args.backup_every, args.report_every)
    )


if __name__ == "__main__":
    raise SystemExit(main())
