"""Routing over several hosts: the cost of the routing decision, and chat throughput through a host group of
three fake Ollama hosts against the same three hosts reached directly, in the same run.

1. **Decision cost**: ``HostHealthBook.plan`` (the whole try order) and ``pick`` over 10 targets, weighted
   random and least-busy, timed per call in batches (p50/p95 in microseconds).
2. **Throughput**: three fake Ollamas, each in its own process, and ModelTrain (a real server process) with
   the three as Ollama providers in one host group. Per round, interleaved: bursts of N concurrent chats
   (``POST /api/chat``, SSE) through the group's model id, and the same bursts spread round-robin over the
   three hosts' own model ids (``ollama:<provider>:<model>``, the routing left out), plus the three fakes'
   own ``/api/chat`` reached without ModelTrain for reference. It prints tokens/s, the group/direct ratio,
   TTFT p50/p95 and the hosts' states after the run.

    .venv/bin/python bench/routing.py [--rounds 3] [--streams 10,30] [--quick]

Targets (printed next to the figures, not asserted): decision <= 50 us p50 with 10 targets; group
throughput >= 0.95 of the hosts' own ids.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat_common import (
    UPSTREAM_MODEL,
    ModelTrain,
    StreamResult,
    add_ollama_provider,
    direct_stream,
    modeltrain_stream,
    pct,
    start_fake,
    start_modeltrain,
)
from server.providers.base import ModelInfo
from server.providers.routed import HostHealthBook, Target

DECISION_TARGET_US = 50.0


class _NoAdapter:
    kind = "ollama"

    async def list_models(self, timeout: float | None = None) -> list[ModelInfo]:
        return []

    async def aclose(self) -> None:
        return None


def decision_cost(calls: int) -> list[tuple[str, float, float]]:
    targets = [
        Target(f"host-{i}", f"host {i}", _NoAdapter(), UPSTREAM_MODEL, i % 2, 1.0 + i)  # type: ignore[arg-type]
        for i in range(10)
    ]
    rows = []
    for strategy in ("weighted", "least_busy"):
        book = HostHealthBook(strategy=strategy, rng=random.Random(1))  # type: ignore[arg-type]
        for i, t in enumerate(targets):
            book.host(t.key).streams_in_flight = i % 3
        book.record_failure("host-3", "down")  # one host cooling down, as in real life
        for name, fn in (("plan", book.plan), ("pick", book.pick)):
            samples = []
            batch = 100
            for _ in range(calls // batch):
                t0 = time.perf_counter()
                for _ in range(batch):
                    fn(targets)
                samples.append((time.perf_counter() - t0) / batch * 1e6)
            rows.append((f"{strategy} {name}", pct(samples, 50), pct(samples, 95)))
    return rows


def setup_group(mt: ModelTrain, urls: list[str]) -> tuple[str, list[str], dict[str, str]]:
    """The default provider (host 0) and two more, all in group "bench": the group's model id, the hosts'
    own model ids, and provider id -> base URL."""
    with httpx.Client(base_url=mt.url, headers={"Authorization": f"Bearer {mt.token}"}) as c:
        default = next(p for p in c.get("/api/providers").json()["items"] if p["is_default"])
        c.patch(f"/api/providers/{default['id']}", json={"group": "bench"}).raise_for_status()
        ids = [default["id"]]
    for i, url in enumerate(urls[1:], 1):
        ids.append(add_ollama_provider(mt, f"host {i}", url))
    with httpx.Client(base_url=mt.url, headers={"Authorization": f"Bearer {mt.token}"}) as c:
        for provider_id in ids[1:]:
            c.patch(f"/api/providers/{provider_id}", json={"group": "bench"}).raise_for_status()
        items = c.get("/api/models").json()["items"]
    group_id = next(m["id"] for m in items if m.get("group") == "bench" and m["model"] == UPSTREAM_MODEL)
    own = [f"ollama:{provider_id}:{UPSTREAM_MODEL}" for provider_id in ids]
    return group_id, own, dict(zip(ids, urls, strict=True))


Make = Callable[[int], Awaitable[StreamResult]]


async def burst(make: Make, streams: int) -> tuple[float, list[StreamResult]]:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(make(i) for i in range(streams)))
    return time.perf_counter() - t0, list(results)


def summary(label: str, runs: list[tuple[float, list[StreamResult]]]) -> tuple[float, str]:
    wall = sum(w for w, _ in runs)
    results = [r for _, rs in runs for r in rs]
    ok = [r for r in results if r.ok]
    tokens = sum(r.tokens for r in ok)
    tps = tokens / wall if wall else 0.0
    ttft = [r.ttft * 1000 for r in ok]
    errors = len(results) - len(ok)
    line = (
        f"  {label:<28} {tps:>10.0f} tok/s   TTFT p50 {pct(ttft, 50):7.1f} ms  p95 {pct(ttft, 95):7.1f} ms"
        f"   errors {errors}"
    )
    return tps, line


async def throughput(mt: ModelTrain, urls: list[str], rounds: int, streams_list: list[int]) -> None:
    group_id, own_ids, _ = await asyncio.to_thread(setup_group, mt, urls)
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for streams in streams_list:
            sides: dict[str, list[tuple[float, list[StreamResult]]]] = {"group": [], "own": [], "raw": []}

            async def via_group(i: int) -> StreamResult:
                return await modeltrain_stream(client, mt, group_id, f"group {i}")

            async def via_own(i: int) -> StreamResult:
                return await modeltrain_stream(client, mt, own_ids[i % 3], f"own {i}")

            async def raw(i: int) -> StreamResult:
                return await direct_stream(client, urls[i % 3], f"raw {i}")

            await burst(via_group, streams)  # warm-up: connections, models loaded on every host
            await burst(via_own, streams)
            for r in range(rounds):
                order = [("group", via_group), ("own", via_own), ("raw", raw)]
                if r % 2:
                    order.reverse()
                for name, make in order:
                    sides[name].append(await burst(make, streams))
            print(f"\n{streams} concurrent streams, {rounds} bursts per side:")
            group_tps, line = summary("through the group", sides["group"])
            print(line)
            own_tps, line = summary("the hosts' own ids (x3)", sides["own"])
            print(line)
            _, line = summary("the fakes directly (x3)", sides["raw"])
            print(line)
            ratio = group_tps / own_tps if own_tps else float("nan")
            print(f"  group / own ids: {ratio:.3f}  (target >= 0.95)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", default="10,30")
    parser.add_argument("--calls", type=int, default=20_000, help="routing decisions timed per cell")
    parser.add_argument("--quick", action="store_true", help="one round, 10 streams, 5,000 decisions")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.streams, args.calls = 1, "10", 5_000
    streams_list = [int(s) for s in args.streams.split(",")]

    print("Routing decision over 10 targets (2 priorities, weights 1-10, one host cooling down):")
    for label, p50, p95 in decision_cost(args.calls):
        verdict = "ok" if p50 <= DECISION_TARGET_US else "OVER"
        print(f"  {label:<20} p50 {p50:6.2f} us  p95 {p95:6.2f} us   (target p50 <= 50 us: {verdict})")

    fakes = [start_fake(0.0, reply_tokens=128) for _ in range(3)]
    urls = [url for _, url in fakes]
    mt = start_modeltrain(urls[0], MODELTRAIN_HOST_PROBE_SECONDS="5")
    try:
        asyncio.run(throughput(mt, urls, args.rounds, streams_list))
        with httpx.Client() as c:
            r = c.get(f"{mt.url}/api/hosts", headers={"Authorization": f"Bearer {mt.token}"})
            states = [(h["name"], h["state"], h["probe_latency_ms"]) for h in r.json()["items"]]
        print("\nHosts after the run (name, state, probe latency ms):", states)
    finally:
        mt.stop()
        for proc, _ in fakes:
            proc.terminate()
            proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
