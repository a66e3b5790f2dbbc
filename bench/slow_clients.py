"""Slow readers (security.md F4): 50 clients that read a streaming reply at 1 byte/s, against a real
ModelTrain server.

Each slow reader opens a raw socket with a small receive buffer (4 KiB), sends POST /api/chat for a long
reply (``--slow-tokens`` tokens generated fast by its own fake Ollama) and then reads one byte a second, so
the server's writes back up and only ASGI back-pressure keeps the reply out of memory. Meanwhile
``--users`` ordinary users stream normal replies (60 tokens at 30 tokens/s, a second fake Ollama) and
read the conversation list. The same ordinary load runs first without the slow readers: that is the
baseline. A control phase then runs as many full-speed readers of the same long replies, so that the
cost of generating them is told apart from the cost of reading slowly. Prints the server's RSS at the
start, the peak and after the slow readers hang up, and the ordinary users' TTFT, stream duration and
list latency in each phase.

    .venv/bin/python bench/slow_clients.py [--slow 50] [--users 10] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat_common import ModelTrain, add_ollama_provider, model_ids, pct, start_fake, start_modeltrain
from bench.load_common import Sampler, chat_stream, probe, prompt, timed_get


@dataclass
class Figures:
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    lists: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def ordinary_users(mt: ModelTrain, model_id: str, users: int, seconds: float) -> Figures:
    """``users`` loops of: stream a reply, then GET the conversation list, for ``seconds``."""
    figures = Figures()
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=users * 2 + 10)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def user(i: int) -> None:
            rng = random.Random(i)
            while time.monotonic() < end:
                out = await chat_stream(client, mt, model_id, prompt(rng))
                if out.ok:
                    figures.ttft.append(out.ttft * 1000)
                    figures.total.append(out.total * 1000)
                else:
                    figures.errors.append(out.error)
                took, status, _ = await timed_get(client, mt, "/api/conversations?size=50")
                if status == 200:
                    figures.lists.append(took * 1000)
                else:
                    figures.errors.append(f"list HTTP {status}")

        await asyncio.gather(*(user(i) for i in range(users)))
    return figures


async def slow_reader(mt: ModelTrain, model_id: str, stop: asyncio.Event, received: list[int]) -> None:
    """POST /api/chat on a raw socket with a 4 KiB receive buffer, then read 1 byte a second until stopped."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(mt.url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (parts.hostname, parts.port))
        body = json.dumps({"model": model_id, "content": "tell me a long story"}).encode()
        head = (
            f"POST /api/chat HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {mt.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        await loop.sock_sendall(sock, head + body)
        n = 0
        while not stop.is_set():
            data = await loop.sock_recv(sock, 1)
            if not data:
                break
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        received.append(n)
    finally:
        sock.close()


async def fast_reader(mt: ModelTrain, model_id: str, end: float) -> int:
    """The control for the slow readers: the same long replies read at full speed until ``end``;
    returns the number of failed streams."""
    errors = 0
    async with httpx.AsyncClient(timeout=300) as client:
        while time.monotonic() < end:
            out = await chat_stream(client, mt, model_id, "tell me a long story", hang_up_after=0)
            errors += not out.ok
    return errors


def kernel_send_queue_kib(port: int) -> float:
    """Bytes the server has written that sit unread in the kernel's send queues of its sockets on ``port``
    (Linux /proc/net/tcp): where a slow reader's reply waits, outside the server's own memory."""
    total = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if int(cols[1].split(":")[1], 16) == port:
                total += int(cols[4].split(":")[0], 16)
    return total / 1024


def fmt(values: list[float]) -> str:
    return f"{pct(values, 50):7.0f} {pct(values, 95):7.0f} {pct(values, 99):7.0f}"


async def main_async(slow: int, users: int, seconds: float, slow_tokens: int) -> int:
    fast_proc, fast_url = start_fake(0.0005, reply_tokens=slow_tokens)
    user_proc, user_url = start_fake(1 / 30, reply_tokens=60)
    mt = start_modeltrain(fast_url)
    try:
        add_ollama_provider(mt, "users", user_url)
        ids = model_ids(mt)
        slow_model, user_model = ids[fast_url], ids[user_url]
        await ordinary_users(mt, user_model, 2, 3)  # warm-up
        before = probe(mt)
        base = await ordinary_users(mt, user_model, users, seconds)
        start = probe(mt)
        sampler = Sampler(mt).start()
        stop = asyncio.Event()
        received: list[int] = []
        readers = [asyncio.create_task(slow_reader(mt, slow_model, stop, received)) for _ in range(slow)]
        await asyncio.sleep(5)  # the slow replies are generated and back up
        loaded = await ordinary_users(mt, user_model, users, seconds)
        during = probe(mt)
        queued = kernel_send_queue_kib(urlsplit(mt.url).port or 0)
        stop.set()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.sleep(5)
        sampler.stop()
        after_slow = probe(mt)
        # control: as many readers of the same long replies, reading at full speed
        control_sampler = Sampler(mt).start()
        control_end = time.monotonic() + seconds + 5
        fast = [asyncio.create_task(fast_reader(mt, slow_model, control_end)) for _ in range(slow)]
        await asyncio.sleep(5)
        control = await ordinary_users(mt, user_model, users, seconds)
        fast_errors = sum(await asyncio.gather(*fast))
        control_sampler.stop()
        await asyncio.sleep(5)
        end = probe(mt)
    finally:
        mt.stop()
        for proc in (fast_proc, user_proc):
            proc.terminate()
            proc.wait(timeout=10)
    print(
        f"{slow} slow readers (1 byte/s, 4 KiB receive buffer, replies of {slow_tokens} tokens); "
        f"{users} ordinary users streaming 60 tokens at 30 tok/s and listing, {seconds:g} s per phase"
    )
    print(f"bytes read per slow reader over the phase: median {pct([float(n) for n in received], 50):.0f}")
    print(
        f"server RSS: before {before.rss:.1f} MiB, start (ordinary load only) {start.rss:.1f} MiB, "
        f"peak with slow readers {max(sampler.rss or [0]):.1f} MiB, "
        f"after the slow readers left {after_slow.rss:.1f} MiB; "
        f"per slow reader {(max(sampler.rss or [0]) - start.rss) * 1024 / slow:.0f} KiB; "
        f"peak with {slow} full-speed readers of the same replies (control) "
        f"{max(control_sampler.rss or [0]):.1f} MiB, "
        f"end {end.rss:.1f} MiB"
    )
    print(
        f"server CPU (one core = 100 %): with slow readers {sampler.cpu_mean():.0f} %, "
        f"with full-speed readers {control_sampler.cpu_mean():.0f} %"
    )
    print(
        f"open fds: start {start.fds}, with slow readers {during.fds}, after {after_slow.fds}, end {end.fds}"
    )
    print(
        f"unread reply bytes held by the kernel (server send queues), end of phase: {queued:.0f} KiB "
        f"({queued / slow:.0f} KiB per slow reader)"
    )
    print(f"{'ordinary users (ms)':<44} {'p50':>7} {'p95':>7} {'p99':>7}  {'n':>5} errors")
    for label, a, b, c in (
        ("TTFT", base.ttft, loaded.ttft, control.ttft),
        ("stream duration", base.total, loaded.total, control.total),
        ("GET /api/conversations", base.lists, loaded.lists, control.lists),
    ):
        print(f"{label + ' baseline':<44} {fmt(a)}  {len(a):5d}")
        print(
            f"{label + ' with slow readers':<44} {fmt(b)}  {len(b):5d}  "
            f"(p95 {pct(b, 95) / pct(a, 95):.2f}x baseline, {pct(b, 95) / pct(c, 95):.2f}x control)"
        )
        print(
            f"{label + ' with full-speed readers':<44} {fmt(c)}  {len(c):5d}  "
            f"(p95 {pct(c, 95) / pct(a, 95):.2f}x baseline)"
        )
    print(
        f"errors: baseline {len(base.errors)}, with slow readers {len(loaded.errors)}, "
        f"control {len(control.errors)} (+{fast_errors} among the full-speed readers)"
    )
    for e in (base.errors + loaded.errors + control.errors)[:3]:
        print(f"  {e[:160]}")
    return 1 if base.errors or loaded.errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=50)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--slow-tokens", type=int, default=50000, help="length of each slow reader's reply")
    args = parser.parse_args()
    return asyncio.run(main_async(args.slow, args.users, args.seconds, args.slow_tokens))


if __name__ == "__main__":
    raise SystemExit(main())
