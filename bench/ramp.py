"""Streams ramp (security.md G2): from 1 to 200 concurrent chat streams through a real ModelTrain server,
the fake Ollama (its own process) sending 30 tokens/s.

At each step ``n`` streams run continuously for ``--step-seconds`` (each client starts a new chat as soon
as its reply ends). Per step: TTFT p50/p95, tokens/s per stream (after the first token; the upstream
sends 30, the baseline) and in total, streams completed, errors, the server's peak RSS and mean CPU.

    .venv/bin/python bench/ramp.py [--steps 1 10 25 50 100 150 200] [--step-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat_common import ModelTrain, model_ids, pct, start_fake, start_modeltrain
from bench.load_common import ChatOutcome, Sampler, chat_stream, probe, prompt

TOKENS = 60
RATE = 30


async def step(mt: ModelTrain, model_id: str, n: int, seconds: float) -> tuple[list[ChatOutcome], Sampler]:
    end = time.monotonic() + seconds
    results: list[ChatOutcome] = []
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    sampler = Sampler(mt, interval=0.5).start()
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def stream(i: int) -> None:
            rng = random.Random(i)
            while time.monotonic() < end:
                try:
                    results.append(await chat_stream(client, mt, model_id, prompt(rng)))
                except httpx.HTTPError as exc:
                    results.append(ChatOutcome(False, error=repr(exc)))

        await asyncio.gather(*(stream(i) for i in range(n)))
    return results, sampler.stop()


async def main_async(steps: list[int], seconds: float) -> int:
    fake_proc, fake_url = start_fake(1 / RATE, reply_tokens=TOKENS)
    mt = start_modeltrain(fake_url)
    failed = 0
    try:
        model_id = model_ids(mt)[fake_url]
        await step(mt, model_id, 2, 3)  # warm-up
        idle = probe(mt)
        print(
            f"replies of {TOKENS} tokens at {RATE} tok/s upstream; {seconds:g} s per step; "
            f"server RSS idle {idle.rss:.1f} MiB"
        )
        print(
            f"{'streams':>7} {'done':>5} {'errors':>6} {'TTFT p50':>9} {'TTFT p95':>9} "
            f"{'tok/s/stream p50':>17} {'p5':>5} {'tok/s total':>11} {'RSS peak':>9} {'CPU %':>6}"
        )
        for n in steps:
            t0 = time.perf_counter()
            results, sampler = await step(mt, model_id, n, seconds)
            wall = time.perf_counter() - t0
            ok = [r for r in results if r.ok]
            errors = [r for r in results if not r.ok]
            failed += len(errors)
            ttft = [r.ttft * 1000 for r in ok]
            rate = [(TOKENS - 1) / (r.total - r.ttft) for r in ok if r.total > r.ttft]
            print(
                f"{n:7d} {len(ok):5d} {len(errors):6d} {pct(ttft, 50):7.0f}ms {pct(ttft, 95):7.0f}ms "
                f"{pct(rate, 50):17.1f} {pct(rate, 5):5.1f} {len(ok) * TOKENS / wall:11.0f} "
                f"{max(sampler.rss or [0]):7.1f}Mi {sampler.cpu_mean():6.0f}"
            )
            if errors:
                print(f"{'':>8}first error: {errors[0].error[:160]}")
        end = probe(mt)
        print(f"server RSS after the ramp: {end.rss:.1f} MiB; CPU % is of one core (this machine has 2)")
    finally:
        mt.stop()
        fake_proc.terminate()
        fake_proc.wait(timeout=10)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 10, 25, 50, 100, 150, 200])
    parser.add_argument("--step-seconds", type=float, default=20)
    args = parser.parse_args()
    return asyncio.run(main_async(args.steps, args.step_seconds))


if __name__ == "__main__":
    raise SystemExit(main())
