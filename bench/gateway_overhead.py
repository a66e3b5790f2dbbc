"""OpenAI-compatible gateway overhead: ``/v1/chat/completions`` streamed through ModelTrain (a real uvicorn
server on loopback, an OpenAI-compatible provider, an ``mt-`` API key) vs the fake OpenAI upstream's own
``/v1/chat/completions`` reached directly.

Both paths run in the same run, interleaved (each round runs a burst direct and a burst through ModelTrain,
the order alternating), with 1, 10 and 50 concurrent streams (a burst: N streams started at the same
instant), against three upstreams, each a fake in its own process: paced at 50 tokens/s (50-token
answers), and at full speed with 256- and 2,048-token answers. The client parses the SSE stream (httpx
streaming) and counts tokens as delta chunks with content. It prints, per cell: time-to-first-token
overhead p50/p95 (through ModelTrain minus direct), throughput (tokens/s, all streams of a side over their
bursts' wall time) and its ratio, and ModelTrain's CPU time (psutil, the server process) per request and per
1,000 tokens. Then the cost of key authentication alone, measured in-process against the server's own
database while it runs: ``check_key`` (HMAC + one indexed read) and the whole per-request step as the
``/v1`` dependency does it (begin, check, commit).

Then the cost of limits: the same streams through ModelTrain with a key under no limit (its user has none
either, not even the default stream cap) and with a key under every kind (requests and tokens per minute,
tokens per day and month, concurrent streams; values that never refuse), interleaved the same way, at 1 and
50 concurrent streams (``--limits-streams``): TTFT p50/p95 and total time p50 with and without, and the
difference.

    .venv/bin/python bench/gateway_overhead.py [--rounds 3] [--streams 1,10,50] [--quick]
        [--limits-streams 1,50] [--only-limits]

Targets (printed next to the figures, not asserted): TTFT overhead <= 5 ms p50 at 1 stream, <= 50 ms p95
at 50 paced streams; throughput >= 0.90 of direct at full speed with 2,048-token answers; key
authentication <= 0.3 ms p50; limits add <= 1 ms p50 at 1 stream and keep those targets at 50 streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat_common import (
    ROOT,
    ModelTrain,
    free_port,
    pct,
    start_fake,
    start_modeltrain,
)

MODEL = "gpt-4o-mini"
UPSTREAM_KEY = "sk-bench-upstream-0123456789"
IDLE_SAMPLE_S = 3.0  # ModelTrain's CPU while no request runs, measured this long before the cells


@dataclass
class StreamResult:
    ttft: float  # seconds to the first delta chunk with content
    total: float  # seconds to the end of the stream
    tokens: int  # completion tokens: the upstream's count from the usage chunk (else ``chunks``)
    chunks: int  # delta chunks with content, as the client received them
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class Profile:
    label: str
    slug: str  # the provider's name in ModelTrain, hence its model ids' prefix
    token_delay: float
    reply_tokens: int


PROFILES = (
    Profile("paced 50/s", "paced", 0.02, 50),
    Profile("max 256", "max256", 0.0, 256),
    Profile("max 2048", "max2048", 0.0, 2048),
)
QUICK_PROFILES = (
    Profile("paced 50/s", "paced", 0.02, 10),
    Profile("max 256", "max256", 0.0, 256),
    Profile("max 2048", "max2048", 0.0, 2048),
)


def start_openai_fake(profile: Profile) -> tuple[subprocess.Popen, str]:
    """The fake OpenAI upstream in its own process; returns it and its base URL (with ``/v1``)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.fake_openai",
            "--port",
            str(port),
            "--api-key",
            UPSTREAM_KEY,
            "--token-delay",
            str(profile.token_delay),
            "--reply-tokens",
            str(profile.reply_tokens),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    with httpx.Client(headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}) as c:
        while True:
            try:
                if c.get(f"{url}/models", timeout=0.5).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the fake OpenAI upstream did not start")
            time.sleep(0.02)


def setup_gateway(mt: ModelTrain, upstreams: dict[str, str]) -> str:
    """One OpenAI-compatible provider per upstream (named by its slug), and an API key; returns the key."""
    with httpx.Client(base_url=mt.url, headers={"Authorization": f"Bearer {mt.token}"}, timeout=30) as c:
        for slug, url in upstreams.items():
            body = {"name": slug, "kind": "openai", "base_url": url, "api_key": UPSTREAM_KEY}
            c.post("/api/providers", json=body).raise_for_status()
        r = c.post("/api/keys", json={"name": "bench"})
        r.raise_for_status()
        return r.json()["key"]


async def sse_stream(client: httpx.AsyncClient, url: str, key: str, model: str, prompt: str) -> StreamResult:
    """One streamed chat completion, parsed as SSE: events end at a blank line, ``data:`` lines join with
    ``\\n``, comments (``:``) are skipped; a token is a delta chunk with content."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft: float | None = None
    chunks = 0
    usage: int | None = None
    done = False
    data: list[str] = []

    def event(payload: str) -> str | None:  # an error message, or None
        nonlocal ttft, chunks, usage, done
        if payload == "[DONE]":
            done = True
            return None
        obj = json.loads(payload)
        if "error" in obj:
            return str(obj["error"].get("message", obj["error"]))[:100]
        for choice in obj.get("choices") or ():
            if (choice.get("delta") or {}).get("content"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
        if isinstance(obj.get("usage"), dict):
            usage = int(obj["usage"].get("completion_tokens", 0))
        return None

    async with client.stream("POST", url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        if r.status_code != 200:
            await r.aread()
            return StreamResult(0, 0, 0, 0, False, f"HTTP {r.status_code} {r.text[:100]}")
        async for line in r.aiter_lines():
            if line == "":
                if data:
                    error = event("\n".join(data))
                    data = []
                    if error:
                        return StreamResult(ttft or 0.0, time.perf_counter() - t0, 0, chunks, False, error)
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value[1:] if value.startswith(" ") else value)
    if data:
        event("\n".join(data))
    total = time.perf_counter() - t0
    tokens = chunks if usage is None else usage
    if not done:
        return StreamResult(ttft or 0.0, total, tokens, chunks, False, "no [DONE]")
    return StreamResult(ttft or 0.0, total, tokens, chunks, ttft is not None)


def cpu_seconds(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


@dataclass
class Side:
    results: list[StreamResult] = field(default_factory=list)
    seconds: float = 0.0  # wall time of this side's bursts
    cpu: float = 0.0  # ModelTrain's CPU seconds during them

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.results)

    @property
    def chunks_per_stream(self) -> float:
        return sum(r.chunks for r in self.results) / max(len(self.results), 1)

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")

    def ttft_ms(self) -> list[float]:
        return [r.ttft * 1000 for r in self.results if r.ok]

    def errors(self) -> list[StreamResult]:
        return [r for r in self.results if not r.ok]


Make = Callable[[str], Awaitable[StreamResult]]


async def run_cell(direct: Make, via: Make, mt_pid: int, streams: int, bursts: int) -> tuple[Side, Side]:
    """``bursts`` rounds of ``streams`` streams started at once, direct and via ModelTrain in turn, the order
    alternating each round."""
    sides = {"direct": Side(), "via": Side()}
    makers = {"direct": direct, "via": via}
    for r in range(bursts):
        for name in ("direct", "via") if r % 2 == 0 else ("via", "direct"):
            side = sides[name]
            c0 = cpu_seconds(mt_pid)
            t0 = time.perf_counter()
            batch = await asyncio.gather(
                *(makers[name](f"bench {name} {r}-{i} {time.time_ns()}") for i in range(streams))
            )
            side.seconds += time.perf_counter() - t0
            side.cpu += cpu_seconds(mt_pid) - c0
            side.results.extend(batch)
    return sides["direct"], sides["via"]


#: Limits for the "every limit on" side: high enough never to refuse, so every request is counted in full.
BENCH_LIMITS = {
    "requests_per_minute": 1_000_000,
    "tokens_per_minute": 1_000_000_000,
    "tokens_per_day": 2_000_000_000,
    "tokens_per_month": 2_000_000_000,
    "concurrent_streams": 100_000,
}


def setup_limits(mt: ModelTrain) -> str:
    """The admin (whose first key is the plain side) gets no limit at all, not even the default stream cap;
    a second key gets every kind: its requests go through the full admission and settlement. Returns it."""
    with httpx.Client(base_url=mt.url, headers={"Authorization": f"Bearer {mt.token}"}, timeout=30) as c:
        me = c.get("/api/users/me").json()["id"]
        c.put(f"/api/users/{me}/limits", json=dict.fromkeys(BENCH_LIMITS)).raise_for_status()
        r = c.post("/api/keys", json={"name": "bench-limited"})
        r.raise_for_status()
        limited = r.json()
        c.put(f"/api/keys/{limited['id']}/limits", json=BENCH_LIMITS).raise_for_status()
        return limited["key"]


async def limits_cells(
    client: httpx.AsyncClient,
    mt: ModelTrain,
    key: str,
    limited_key: str,
    rounds: int,
    streams: tuple[int, ...],
) -> None:
    """The time limits add: the same /v1 streams through ModelTrain with a key under no limit and with a key
    under every kind, interleaved like the main table."""
    print(
        "\nlimits: /v1 streams through ModelTrain, a key under no limit vs a key under every kind"
        f" (requests/min, tokens/min/day/month, concurrent streams); rounds={rounds}"
    )
    print(
        f"{'upstream':>10} {'streams':>7} | {'TTFT p50 none':>13} {'all':>7} {'added':>8} | "
        f"{'TTFT p95 none':>13} {'all':>7} {'added':>8} | "
        f"{'total p50 none':>14} {'all':>7} {'added':>8} | errors"
    )
    for label, slug in (("paced 50/s", "paced"), ("max 256", "max256")):
        for n in streams:
            bursts = rounds * (10 if n == 1 else 1)
            bursts += bursts % 2

            async def plain(prompt: str, model: str = f"{slug}/{MODEL}") -> StreamResult:
                return await sse_stream(client, f"{mt.url}/v1/chat/completions", key, model, prompt)

            async def limited(prompt: str, model: str = f"{slug}/{MODEL}") -> StreamResult:
                return await sse_stream(client, f"{mt.url}/v1/chat/completions", limited_key, model, prompt)

            a, b = await run_cell(plain, limited, mt.proc.pid, n, bursts)
            errs = a.errors() + b.errors()
            at, bt = a.ttft_ms(), b.ttft_ms()
            atot = [r.total * 1000 for r in a.results if r.ok]
            btot = [r.total * 1000 for r in b.results if r.ok]
            cols = []
            for none, every, width in ((pct(at, 50), pct(bt, 50), 11), (pct(at, 95), pct(bt, 95), 11)):
                cols.append(f"{none:{width}.1f}ms {every:5.1f}ms {every - none:+6.1f}ms")
            none, every = pct(atot, 50), pct(btot, 50)
            cols.append(f"{none:12.1f}ms {every:5.1f}ms {every - none:+6.1f}ms")
            print(
                f"{label:>10} {n:>7} | "
                + " | ".join(cols)
                + f" | {len(errs)}"
                + (f" ({errs[0].error})" if errs else ""),
                flush=True,
            )
    print("targets: limits add <= 1 ms p50 at 1 stream and keep the /v1 overhead targets at 50 streams")


def key_auth_cost(mt: ModelTrain, key: str, iterations: int) -> tuple[float, float]:
    """p50 in ms of ``check_key`` alone and of the per-request step of the ``/v1`` dependency (begin a
    read, check, commit), in this process against the running server's database."""
    from server.db.session import create_db_engine, create_session_factory
    from server.security.api_key_hash import KeyHasher
    from server.security.secret_store import load_or_create_secret
    from server.services.api_keys import check_key
    from server.settings import load_settings

    os.environ["MODELTRAIN_DATA_DIR"] = str(mt.data_dir)
    settings = load_settings()
    hasher = KeyHasher(load_or_create_secret(settings))
    engine = create_db_engine(settings.resolved_database_url)
    factory = create_session_factory(engine)
    alone: list[float] = []
    step: list[float] = []
    try:
        with factory() as session:
            for i in range(iterations + 50):
                session.connection(execution_options={"sqlite_begin": "DEFERRED"})
                t0 = time.perf_counter()
                check_key(session, hasher, key, "127.0.0.1")
                t1 = time.perf_counter()
                session.commit()
                if i >= 50:  # warm-up: connection, statement cache, pages
                    alone.append((t1 - t0) * 1000)
            for i in range(iterations + 50):
                t0 = time.perf_counter()
                session.connection(execution_options={"sqlite_begin": "DEFERRED"})
                try:
                    check_key(session, hasher, key, "127.0.0.1")
                finally:
                    session.commit()
                if i >= 50:
                    step.append((time.perf_counter() - t0) * 1000)
    finally:
        engine.dispose()
    return pct(alone, 50), pct(step, 50)


async def main_async(
    rounds: int, streams: tuple[int, ...], quick: bool, auth_iterations: int, limits_streams: tuple[int, ...]
) -> int:
    profiles = QUICK_PROFILES if quick else PROFILES
    fakes = {p.slug: start_openai_fake(p) for p in profiles}
    ollama_proc, ollama_url = start_fake(0.0)  # ModelTrain's default provider; not used by the bench
    mt = start_modeltrain(ollama_url, MODELTRAIN_SECRET_STORE="file")
    failures = 0
    try:
        key = setup_gateway(mt, {slug: url for slug, (_, url) in fakes.items()})
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=500, keepalive_expiry=2)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            for p in profiles:  # warm-up: connections, model discovery, SQLite pages
                upstream = fakes[p.slug][1]
                await sse_stream(client, f"{upstream}/chat/completions", UPSTREAM_KEY, MODEL, "warm")
                await sse_stream(client, f"{mt.url}/v1/chat/completions", key, f"{p.slug}/{MODEL}", "warm")
            c0 = cpu_seconds(mt.proc.pid)
            await asyncio.sleep(IDLE_SAMPLE_S)
            idle = (cpu_seconds(mt.proc.pid) - c0) / IDLE_SAMPLE_S * 1000
            print(
                "\n/v1/chat/completions streamed, direct (fake OpenAI) vs through ModelTrain;"
                f" bursts of N streams, interleaved; rounds={rounds}"
            )
            header = (
                f"{'upstream':>10} {'streams':>7} | {'TTFT p50 direct':>15} {'via MT':>8} {'overhead':>9} | "
                f"{'TTFT p95 direct':>15} {'via MT':>8} {'overhead':>9} | "
                f"{'tok/s direct':>12} {'via MT':>8} {'ratio':>6} | {'chunks/stream':>13} {'via MT':>6} | "
                f"{'CPU/req':>8} {'CPU/1k tok':>10} | errors"
            )
            print(header)
            for p in profiles:
                upstream = fakes[p.slug][1]
                for n in streams:
                    bursts = rounds * (10 if n == 1 else 1)
                    bursts += bursts % 2  # an even count: each side goes first equally often

                    async def direct(prompt: str, u: str = upstream) -> StreamResult:
                        return await sse_stream(client, f"{u}/chat/completions", UPSTREAM_KEY, MODEL, prompt)

                    async def via(prompt: str, model: str = f"{p.slug}/{MODEL}") -> StreamResult:
                        return await sse_stream(client, f"{mt.url}/v1/chat/completions", key, model, prompt)

                    d, v = await run_cell(direct, via, mt.proc.pid, n, bursts)
                    errs = d.errors() + v.errors()
                    failures += len(errs)
                    dt, vt = d.ttft_ms(), v.ttft_ms()
                    d50, v50, d95, v95 = pct(dt, 50), pct(vt, 50), pct(dt, 95), pct(vt, 95)
                    ok_via = len(v.results) - len(v.errors())
                    cpu_req = v.cpu / max(ok_via, 1) * 1000
                    cpu_1k = v.cpu / max(v.tokens, 1) * 1e6
                    row = (
                        f"{p.label:>10} {n:>7} | {d50:13.1f}ms {v50:6.1f}ms {v50 - d50:+7.1f}ms | "
                        f"{d95:13.1f}ms {v95:6.1f}ms {v95 - d95:+7.1f}ms | "
                        f"{d.tps:12.0f} {v.tps:8.0f} {v.tps / d.tps:6.2f} | "
                        f"{d.chunks_per_stream:13.0f} {v.chunks_per_stream:6.0f} | "
                        f"{cpu_req:6.1f}ms {cpu_1k:8.1f}ms | {len(errs)}"
                        + (f" ({errs[0].error})" if errs else "")
                    )
                    print(row, flush=True)
            if limits_streams:
                limited_key = setup_limits(mt)
                await limits_cells(client, mt, key, limited_key, rounds, limits_streams)
        alone, step = key_auth_cost(mt, key, auth_iterations)
    finally:
        mt.stop()
        for proc in (ollama_proc, *(proc for proc, _ in fakes.values())):
            proc.terminate()
            proc.wait(timeout=10)
    print(f"ModelTrain idle (background work, included in CPU/req): {idle:.1f} ms CPU per second")
    print(
        f"key authentication p50 ({auth_iterations} calls, in-process, SQLite): check_key {alone:.3f} ms;"
        f" begin + check_key + commit (the /v1 dependency's step) {step:.3f} ms"
    )
    print(
        "targets: TTFT overhead p50 <= 5 ms @1 stream, p95 <= 50 ms @50 paced streams; throughput ratio"
        " >= 0.90 at full speed with 2,048-token answers; key authentication <= 0.3 ms p50"
    )
    print(
        "tok/s: completion tokens (the upstream's count, from the include_usage chunk) of all streams of a"
        " side over its bursts' wall time; chunks/stream: delta chunks with content as the client parsed them"
        " (ModelTrain passes on what one read from the upstream holds as one chunk); CPU/req and CPU/1k tok:"
        " ModelTrain's process CPU time during the via-ModelTrain bursts, per request and per 1,000 tokens"
    )
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=3, help="bursts per side and cell (x10 at 1 stream), rounded up to even"
    )
    parser.add_argument("--streams", default=None, help="concurrent streams per burst, comma-separated")
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run: 1 round, 1 stream, short paced answers"
    )
    parser.add_argument(
        "--limits-streams",
        default="1,50",
        help="concurrent streams of the limits cells, comma-separated; empty: skip them",
    )
    parser.add_argument(
        "--only-limits", action="store_true", help="skip the direct-vs-ModelTrain table, run the limits cells"
    )
    args = parser.parse_args()
    default_streams = "1" if args.quick else "1,10,50"
    streams = tuple(int(s) for s in (args.streams or default_streams).split(","))
    rounds = 1 if args.quick and args.rounds == 3 else args.rounds
    limits_streams = tuple(int(s) for s in args.limits_streams.split(",") if s)
    if args.only_limits:
        streams = ()
    return asyncio.run(main_async(rounds, streams, args.quick, 200 if args.quick else 2000, limits_streams))


if __name__ == "__main__":
    raise SystemExit(main())
