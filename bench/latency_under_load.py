"""API latency under load (security.md G1): the conversation list, a conversation's detail and search, at
10 and 50 concurrent clients for 60 s each, with and without chat streams running.

A real ModelTrain server holds ``--conversations`` conversations (seeded straight into its database, as in
bench/conversations_scale.py). Each phase runs ``clients`` loops that each pick one of the three reads at
random, back to back; in the "streaming" phases ``--streams`` chats stream continuously meanwhile (60
tokens at 30 tokens/s from the fake Ollama in its own process, each a new reply as soon as one ends).
Prints p50/p95/p99 per read and phase, and the ratio to the same read without streaming (the baseline,
measured in the same run).

    .venv/bin/python bench/latency_under_load.py [--seconds 60] [--streams 20] [--clients 10 50]
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
from bench.conversations_scale import seed
from bench.load_common import Sampler, auth, chat_stream, prompt, timed_get

READS = ("list", "detail", "search")
SEARCH_WORDS = ["river", "coffee", "lighthouse", "planet", "zanzibar"]


def conversation_ids(mt: ModelTrain) -> list[str]:
    with httpx.Client(base_url=mt.url, headers=auth(mt), timeout=30) as c:
        return [
            i["id"] for p in (1, 2, 3) for i in c.get(f"/api/conversations?page={p}&size=200").json()["items"]
        ]


async def phase(
    mt: ModelTrain, model_id: str, ids: list[str], clients: int, streams: int, seconds: float
) -> tuple[dict[str, list[float]], int, int, float]:
    """(latencies in ms per read, errors, streams completed, server CPU %) of one phase."""
    times: dict[str, list[float]] = {k: [] for k in READS}
    errors = 0
    streamed = 0
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + streams + 10)
    sampler = Sampler(mt, interval=0.5).start()
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def reader(i: int) -> None:
            nonlocal errors
            rng = random.Random(i)
            while time.monotonic() < end:
                kind = rng.choice(READS)
                if kind == "list":
                    path = f"/api/conversations?page={rng.randint(1, 5)}&size=50"
                elif kind == "detail":
                    path = f"/api/conversations/{rng.choice(ids)}"
                else:
                    path = f"/api/conversations/search?q={rng.choice(SEARCH_WORDS)}"
                took, status, _ = await timed_get(client, mt, path)
                if status == 200:
                    times[kind].append(took * 1000)
                else:
                    errors += 1

        async def streamer(i: int) -> None:
            nonlocal errors, streamed
            rng = random.Random(1000 + i)
            while time.monotonic() < end:
                out = await chat_stream(client, mt, model_id, prompt(rng))
                if out.ok:
                    streamed += 1
                else:
                    errors += 1

        await asyncio.gather(*(reader(i) for i in range(clients)), *(streamer(i) for i in range(streams)))
    sampler.stop()
    return times, errors, streamed, sampler.cpu_mean()


async def main_async(seconds: float, streams: int, client_counts: list[int], conversations: int) -> int:
    fake_proc, fake_url = start_fake(1 / 30, reply_tokens=60)
    mt = start_modeltrain(fake_url)
    failed = 0
    try:
        took = seed(f"sqlite:///{mt.data_dir / 'modeltrain.db'}", conversations, conversations * 20)
        print(f"seeded {conversations} conversations / {conversations * 20} messages in {took:.1f} s")
        model_id = model_ids(mt)[fake_url]
        ids = conversation_ids(mt)
        await phase(mt, model_id, ids, 2, 1, 3)  # warm-up
        print(
            f"{seconds:g} s per phase; streaming phases run {streams} chats continuously "
            "(60 tokens at 30 tok/s)"
        )
        print(
            f"{'clients':>7} {'streams':>7} {'read':<7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
            f"{'req/s':>6}  p95 vs no streams"
        )
        for clients in client_counts:
            base: dict[str, list[float]] = {}
            for s in (0, streams):
                times, errors, streamed, cpu = await phase(mt, model_id, ids, clients, s, seconds)
                failed += errors
                for kind in READS:
                    t = times[kind]
                    ratio = f"{pct(t, 95) / pct(base[kind], 95):.2f}x" if s else "(baseline)"
                    print(
                        f"{clients:7d} {s:7d} {kind:<7} {pct(t, 50):7.1f} {pct(t, 95):7.1f} "
                        f"{pct(t, 99):7.1f} {len(t) / seconds:6.1f}  {ratio}"
                    )
                    if not s:
                        base[kind] = t
                print(
                    f"{'':>16}errors {errors}, streams completed {streamed}, server CPU {cpu:.0f} % of a core"
                )
    finally:
        mt.stop()
        fake_proc.terminate()
        fake_proc.wait(timeout=10)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--conversations", type=int, default=1000)
    args = parser.parse_args()
    return asyncio.run(main_async(args.seconds, args.streams, args.clients, args.conversations))


if __name__ == "__main__":
    raise SystemExit(main())
