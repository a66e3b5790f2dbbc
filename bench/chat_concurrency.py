"""200 concurrent chat streams through ModelTrain (real uvicorn server on loopback) at ~30 tok/s.

Prints errors (target: zero), stream duration p50/p99 against the same 200 streams sent directly to the
fake Ollama in the same run (the baseline), and ModelTrain's RSS idle / at peak / per stream.

    .venv/bin/python bench/chat_concurrency.py [--streams 200] [--token-delay 0.033]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat_common import (
    direct_stream,
    model_ids,
    modeltrain_stream,
    pct,
    rss_mib,
    start_fake,
    start_modeltrain,
)


async def main_async(streams: int, token_delay: float) -> int:
    fake_proc, fake_url = start_fake(token_delay)
    mt = start_modeltrain(fake_url)
    try:
        model_id = model_ids(mt)[fake_url]
        limits = httpx.Limits(max_connections=streams * 2 + 10, max_keepalive_connections=streams * 2)
        async with httpx.AsyncClient(timeout=300, limits=limits) as client:
            await modeltrain_stream(client, mt, model_id, "warm")
            idle = rss_mib(mt.proc.pid)
            direct = await asyncio.gather(*(direct_stream(client, fake_url, f"d{i}") for i in range(streams)))
            peak = [idle]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak.append(rss_mib(mt.proc.pid))
                    stop.wait(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            via = await asyncio.gather(
                *(modeltrain_stream(client, mt, model_id, f"v{i}") for i in range(streams)),
                return_exceptions=True,
            )
            wall = time.perf_counter() - t0
            stop.set()
            sampler.join()
    finally:
        mt.stop()
        fake_proc.terminate()
        fake_proc.wait(timeout=10)
    ok = [r for r in via if not isinstance(r, BaseException) and r.ok]
    errors = [r for r in via if isinstance(r, BaseException) or not r.ok]
    d_tot = [r.total * 1000 for r in direct if r.ok]
    v_tot = [r.total * 1000 for r in ok]
    v_ttft = [r.ttft * 1000 for r in ok]
    d_ttft = [r.ttft * 1000 for r in direct if r.ok]
    print(f"streams: {streams} at {1 / token_delay:.0f} tok/s upstream; wall {wall:.1f} s")
    print(f"errors via ModelTrain: {len(errors)}" + (f" (first: {errors[0]!r})" if errors else ""))
    print(
        f"stream duration p50/p99: direct {pct(d_tot, 50):.0f}/{pct(d_tot, 99):.0f} ms, "
        f"via ModelTrain {pct(v_tot, 50):.0f}/{pct(v_tot, 99):.0f} ms "
        f"(extra p99 {pct(v_tot, 99) - pct(d_tot, 99):+.0f} ms)"
    )
    print(
        f"TTFT p50/p99: direct {pct(d_ttft, 50):.0f}/{pct(d_ttft, 99):.0f} ms, "
        f"via ModelTrain {pct(v_ttft, 50):.0f}/{pct(v_ttft, 99):.0f} ms"
    )
    print(
        f"ModelTrain RSS: idle {idle:.1f} MiB, peak {max(peak):.1f} MiB, "
        f"per stream {(max(peak) - idle) * 1024 / streams:.0f} KiB"
    )
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--token-delay", type=float, default=1 / 30)
    args = parser.parse_args()
    return asyncio.run(main_async(args.streams, args.token_delay))


if __name__ == "__main__":
    raise SystemExit(main())
