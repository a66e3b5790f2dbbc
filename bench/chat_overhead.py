"""Chat streaming overhead: ModelTrain (real uvicorn server on loopback) vs the fake Ollama directly.

For 1, 10 and 50 concurrent streams, with the upstream at 50 tok/s and at maximum speed, it measures
time to first token (TTFT) and aggregate throughput (tokens/s) both ways in the same run, and prints
the TTFT overhead (p50/p95 of ModelTrain minus direct) and the throughput ratio. Two load shapes:

* **steady** — N clients in a closed loop (each starts its next chat when the last one ends), their
  first starts spread over one chat's duration: N streams are open at any moment and new ones keep
  arriving, as with N users. The first chat of each client (the ramp) is not counted.
* **burst** — N chats started at the same instant, then the next N once all have ended: the worst
  case for TTFT, every request of the burst queues behind the others' set-up work.

    .venv/bin/python bench/chat_overhead.py [--rounds 3] [--shape steady|burst|both]

Targets: TTFT overhead p50 <= 5 ms at 1 stream, p95 <= 50 ms at 50 streams; throughput
>= 90 % of direct at maximum speed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat_common import (
    StreamResult,
    add_ollama_provider,
    direct_stream,
    model_ids,
    modeltrain_stream,
    pct,
    start_fake,
    start_modeltrain,
)


async def run_burst(make, concurrency: int, rounds: int) -> tuple[list[StreamResult], float]:
    """Burst: ``concurrency`` chats at the same instant, ``rounds`` times. Returns results, tokens/s."""
    results: list[StreamResult] = []
    t0 = time.perf_counter()
    for r in range(rounds):
        batch = await asyncio.gather(
            *(make(f"bench prompt {r}-{i} {time.time_ns()}") for i in range(concurrency))
        )
        results.extend(batch)
    return results, sum(r.tokens for r in results) / (time.perf_counter() - t0)


async def run_steady(make, concurrency: int, per_client: int) -> tuple[list[StreamResult], float]:
    """Steady: ``concurrency`` clients in a closed loop, ``per_client`` counted chats each after one
    uncounted ramp chat, first starts spread over the duration of one chat measured just before.
    Returns the counted results and the tokens/s while all clients were in their counted part (each
    chat's tokens are spread evenly over its duration to share them out at the window's edges)."""
    probe = await make(f"bench probe {time.time_ns()}")
    spacing = probe.total / concurrency
    counted: list[StreamResult] = []
    spans: list[tuple[float, float, int]] = []  # start, end, tokens of each counted chat
    phases: list[tuple[float, float]] = []  # each client's counted part

    async def client(i: int) -> None:
        await asyncio.sleep(i * spacing)
        await make(f"bench ramp {i} {time.time_ns()}")
        begin = time.perf_counter()
        for k in range(per_client):
            start = time.perf_counter()
            result = await make(f"bench prompt {i}-{k} {time.time_ns()}")
            spans.append((start, time.perf_counter(), result.tokens))
            counted.append(result)
        phases.append((begin, time.perf_counter()))

    await asyncio.gather(*(client(i) for i in range(concurrency)))
    lo, hi = max(a for a, _ in phases), min(b for _, b in phases)
    if hi <= lo:  # clients never all in their counted part at once: use the whole counted time
        lo, hi = min(a for a, _ in phases), max(b for _, b in phases)
    tokens = sum(
        n * max(0.0, min(end, hi) - max(start, lo)) / max(end - start, 1e-9) for start, end, n in spans
    )
    return counted, tokens / (hi - lo)


async def main_async(rounds: int, shapes: tuple[str, ...]) -> int:
    slow_proc, slow_url = start_fake(0.02)  # 50 tok/s
    fast_proc, fast_url = start_fake(0.0)  # as fast as the fake can go
    long_proc, long_url = start_fake(0.0, reply_tokens=1000)  # max speed, answers of 1,000 tokens
    mt = start_modeltrain(slow_url)
    failures = 0
    try:
        add_ollama_provider(mt, "fast", fast_url)
        add_ollama_provider(mt, "long", long_url)
        ids = model_ids(mt)
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so none is reused as it closes.
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=500, keepalive_expiry=2)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            # warm-up (connections, model discovery, SQLite pages)
            for url in (slow_url, fast_url, long_url):
                await direct_stream(client, url, "warm")
                await modeltrain_stream(client, mt, ids[url], "warm")
            # "max" answers are the fake's short default (~46 tokens), so per-request costs dominate their
            # throughput; "max 1k" answers are 1,000 tokens, which shows the streaming throughput itself.
            for shape in shapes:
                print(
                    f"\n{shape}: "
                    + (
                        "N clients in a closed loop, starts spread out"
                        if shape == "steady"
                        else "N chats started at the same instant"
                    )
                )
                print(
                    f"{'upstream':>10} {'streams':>7} | "
                    f"{'TTFT p50 direct':>15} {'via MT':>8} {'overhead':>8} | "
                    f"{'TTFT p95 direct':>15} {'via MT':>8} {'overhead':>8} | "
                    f"{'tok/s direct':>12} {'via MT':>8} {'ratio':>6} | errors"
                )
                for label, url in (("50 tok/s", slow_url), ("max", fast_url), ("max 1k", long_url)):
                    for n in (1, 10, 50):
                        if shape == "steady":
                            k = rounds * (10 if n == 1 else 2)
                            run = run_steady
                        else:
                            k = rounds * (10 if n == 1 else 1)
                            run = run_burst
                        direct, d_tps = await run(lambda p, u=url: direct_stream(client, u, p), n, k)
                        via, v_tps = await run(
                            lambda p, u=url: modeltrain_stream(client, mt, ids[u], p), n, k
                        )
                        errs = [r for r in via if not r.ok] + [r for r in direct if not r.ok]
                        failures += len(errs)
                        dt = [r.ttft * 1000 for r in direct if r.ok]
                        vt = [r.ttft * 1000 for r in via if r.ok]
                        d50, v50, d95, v95 = pct(dt, 50), pct(vt, 50), pct(dt, 95), pct(vt, 95)
                        print(
                            f"{label:>10} {n:>7} | "
                            f"{d50:13.1f}ms {v50:6.1f}ms {v50 - d50:+6.1f}ms | "
                            f"{d95:13.1f}ms {v95:6.1f}ms {v95 - d95:+6.1f}ms | "
                            f"{d_tps:12.0f} {v_tps:8.0f} {v_tps / d_tps:6.2f} | "
                            f"{len(errs)}" + (f" ({errs[0].error})" if errs else "")
                        )
    finally:
        mt.stop()
        for p in (slow_proc, fast_proc, long_proc):
            p.terminate()
            p.wait(timeout=10)
    print("targets: overhead p50 <= 5 ms @1, p95 <= 50 ms @50; throughput ratio >= 0.90 at max speed")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="chats per client (steady: x2, x10 at 1 stream) or bursts per cell (x10 at 1 stream)",
    )
    parser.add_argument("--shape", choices=("steady", "burst", "both"), default="both")
    args = parser.parse_args()
    shapes = ("steady", "burst") if args.shape == "both" else (args.shape,)
    return asyncio.run(main_async(args.rounds, shapes))


if __name__ == "__main__":
    raise SystemExit(main())
