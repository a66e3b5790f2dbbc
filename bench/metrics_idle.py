"""CPU cost of metrics collection at idle (the issue's budget: < 1 % of one core).

    .venv/bin/python bench/metrics_idle.py [--seconds 30] [--interval 5]

Runs two child processes for the same wall time, each an asyncio loop like the server's:
* baseline: the loop only (an idle server process);
* metrics: the same loop plus the real MetricsCollector sampler task at ``--interval`` seconds.
Each child reports its own CPU time (user+sys). The cost is (metrics - baseline) / wall time. A second
pair samples 10x as often to show the per-sample cost above the noise, and the per-sample cost is also
measured directly in this process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, json, logging, os, sys, time
logging.disable(logging.CRITICAL)
sys.path.insert(0, sys.argv[1])
mode, seconds, interval, data_dir = sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
from server.settings import Settings
from server.services.alerts import AlertCenter
from server.services.metrics import MetricsCollector

async def main():
    collector = None
    if mode == "metrics":
        settings = Settings(_env_file=None, data_dir=data_dir, metrics_interval_seconds=interval)
        collector = MetricsCollector(settings, alerts=AlertCenter())
        collector.start()
    t0 = time.process_time()
    await asyncio.sleep(seconds)
    t1 = time.process_time()
    if collector is not None:
        await collector.stop()
    print(json.dumps({"cpu": t1 - t0,
                      "samples": len(collector.history) if collector else 0}))

asyncio.run(main())
"""


def run_pair(seconds: float, interval: float, data_dir: str) -> dict[str, dict]:
    procs = {
        mode: subprocess.Popen(
            [sys.executable, "-c", CHILD, str(ROOT), mode, str(seconds), str(interval), data_dir],
            stdout=subprocess.PIPE,
            text=True,
        )
        for mode in ("baseline", "metrics")
    }
    return {mode: json.loads(p.communicate()[0]) for mode, p in procs.items()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import logging

    from server.services.alerts import AlertCenter
    from server.services.metrics import MetricsCollector
    from server.settings import Settings

    logging.disable(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="mt-bench-metrics-") as data_dir:
        collector = MetricsCollector(Settings(_env_file=None, data_dir=data_dir), alerts=AlertCenter())
        for _ in range(200):
            collector.record_request(200, 12.0)
        n = 500
        start = time.process_time()
        for _ in range(n):
            collector.sample()
        per_sample = (time.process_time() - start) / n

        print(f"per sample (measured in-process): {per_sample * 1e3:.3f} ms CPU")
        print(
            f"-> at one sample every {args.interval:g} s: "
            f"{100 * per_sample / args.interval:.4f} % of one core"
        )
        for interval in (args.interval, args.interval / 10):
            r = run_pair(args.seconds, interval, data_dir)
            base, met = r["baseline"]["cpu"], r["metrics"]["cpu"]
            extra = max(0.0, met - base)
            print(
                f"interval {interval:g} s over {args.seconds:g} s wall: "
                f"idle process {base * 1e3:.1f} ms CPU, "
                f"with metrics {met * 1e3:.1f} ms CPU ({r['metrics']['samples']} samples); "
                f"cost {100 * extra / args.seconds:.4f} % of one core (budget 1 %); "
                f"ratio to the idle process x{met / max(base, 1e-6):.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
