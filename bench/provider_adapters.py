"""Cost of the provider adapters themselves, against a minimal direct client in the same run.

    .venv/bin/python bench/provider_adapters.py [--streams 20] [--words 2000] [--concurrency 1 10]

A fake Ollama runs in its own process at maximum token speed. For each concurrency level, the same
requests are made by:

* baseline: httpx streaming ``/api/chat`` + ``aiter_lines`` + ``json.loads`` + the ``error``/``done``
  checks (the least any correct client does);
* adapter: ``OllamaProvider.stream_chat`` through the app's registry client (line cap, per-chunk
  first-token/idle timeouts, control-character stripping, typed events, connect-time address check).

Printed: tokens/s of each, the adapter/baseline throughput ratio, and time to first token p50/p95 of
each (small prompt). The two modes alternate, so drift hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.providers.base import ChatMessage, ChatRequest, Delta, Done, Timeouts  # noqa: E402
from server.providers.registry import ProviderRegistry  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fake(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.fake_ollama", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the fake Ollama did not start")


async def direct(client: httpx.AsyncClient, url: str, prompt: str) -> tuple[int, float]:
    """Tokens received and seconds to the first one."""
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": prompt}], "stream": True}
    async with client.stream("POST", f"{url}/api/chat", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line:
                continue
            data = json.loads(line)
            if data.get("error"):
                raise RuntimeError(data["error"])
            if data.get("message", {}).get("content"):
                if not tokens:
                    first = time.perf_counter() - started
                tokens += 1
            if data.get("done"):
                return tokens, first
    raise RuntimeError("stream ended without done")


async def adapted(registry: ProviderRegistry, url: str, prompt: str) -> tuple[int, float]:
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    request = ChatRequest(model="llama3.2", messages=[ChatMessage("user", prompt)])
    async for event in registry.build_for("ollama", url).stream_chat(request, Timeouts(5, 30, 30)):
        if isinstance(event, Delta) and event.content:
            if not tokens:
                first = time.perf_counter() - started
            tokens += 1
        elif isinstance(event, Done):
            return tokens, first
    raise RuntimeError("no Done")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(url: str, streams: int, words: int, levels: list[int]) -> None:
    long_prompt = " ".join(["word"] * words)
    registry = ProviderRegistry()
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0), trust_env=False) as client:
        # warm both paths (connections, imports)
        await direct(client, url, "hi")
        await adapted(registry, url, "hi")
        print(f"fake Ollama at maximum speed, replies of ~{words} tokens, {streams} streams per level")
        print(f"{'concurrency':>11} {'baseline tok/s':>15} {'adapter tok/s':>14} {'ratio':>7}")
        for level in levels:
            totals = {"baseline": [0, 0.0], "adapter": [0, 0.0]}
            for _ in range(max(1, streams // level)):
                for name in ("baseline", "adapter"):
                    started = time.perf_counter()
                    if name == "baseline":
                        results = await asyncio.gather(
                            *(direct(client, url, long_prompt) for _ in range(level))
                        )
                    else:
                        results = await asyncio.gather(
                            *(adapted(registry, url, long_prompt) for _ in range(level))
                        )
                    totals[name][0] += sum(r[0] for r in results)
                    totals[name][1] += time.perf_counter() - started
            base = totals["baseline"][0] / totals["baseline"][1]
            ours = totals["adapter"][0] / totals["adapter"][1]
            print(f"{level:>11} {base:>15,.0f} {ours:>14,.0f} {ours / base:>7.2f}")
        ttft = {"baseline": [], "adapter": []}
        for _ in range(100):
            ttft["baseline"].append((await direct(client, url, "hi"))[1] * 1000)
            ttft["adapter"].append((await adapted(registry, url, "hi"))[1] * 1000)
        print(f"{'':>11} {'TTFT p50 ms':>15} {'TTFT p95 ms':>14}")
        for name, values in ttft.items():
            print(f"{name:>11} {statistics.median(values):>15.2f} {pct(values, 0.95):>14.2f}")
        overhead = statistics.median(ttft["adapter"]) - statistics.median(ttft["baseline"])
        print(f"adapter TTFT overhead p50: {overhead:+.2f} ms")
    await registry.aclose()


async def cpu_only(lines: int) -> None:
    """The same recorded NDJSON bytes through both paths with no network (httpx MockTransport): the
    pure per-token CPU cost of the adapter."""
    from server.providers.ollama import OllamaProvider

    chunk = {
        "model": "llama3.2",
        "created_at": "2026-03-02T10:15:04.1182Z",
        "message": {"role": "assistant", "content": " token"},
        "done": False,
    }
    payload = (json.dumps(chunk) + "\n").encode() * lines + b'{"done":true,"eval_count":1}\n'
    pieces = [payload[i : i + 16384] for i in range(0, len(payload), 16384)]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/x-ndjson"}, stream=_Replay(pieces))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        timings = {"baseline": [], "adapter": []}
        for _ in range(3):
            started = time.perf_counter()
            await direct(client, "http://bench.invalid", "x")
            timings["baseline"].append(time.perf_counter() - started)
            started = time.perf_counter()
            adapter = OllamaProvider("http://bench.invalid", client)
            async for _event in adapter.stream_chat(ChatRequest("llama3.2", [ChatMessage("user", "x")])):
                pass
            timings["adapter"].append(time.perf_counter() - started)
    base, ours = min(timings["baseline"]), min(timings["adapter"])
    print(
        f"CPU only ({lines:,} lines): baseline {base / lines * 1e6:.2f} us/token, "
        f"adapter {ours / lines * 1e6:.2f} us/token, throughput ratio {base / ours:.2f}"
    )


class _Replay(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def __aiter__(self):
        for piece in self._pieces:
            yield piece


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--words", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args()
    port = free_port()
    proc = start_fake(port)
    try:
        asyncio.run(run(f"http://127.0.0.1:{port}", args.streams, args.words, args.concurrency))
        asyncio.run(cpu_only(200_000))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
