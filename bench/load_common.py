"""Shared plumbing of the load and endurance benchmarks (slow_clients, latency_under_load, ramp, soak):
process probes (RSS, CPU, open files, threads, WAL size), a background sampler, the web UI's read
requests (list, detail, search) and a chat stream that can hang up part-way.

The server, the fake Ollama and this load generator each run in their own process (bench/chat_common.py).
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from bench.chat_common import ModelTrain

_CONV = re.compile(r'"conversation_id":\s*"([0-9a-f-]{36})"')
WORDS = ["river", "mountain", "coffee", "garden", "planet", "signal", "bridge", "island", "winter", "story"]


def prompt(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(8))


@dataclass
class Probe:
    """One look at the server process: RSS (MiB), open file descriptors, threads, WAL size (KiB)."""

    rss: float
    fds: int
    threads: int
    wal_kib: float
    db_kib: float
    fd_kinds: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.fd_kinds.items()))
        return (
            f"RSS {self.rss:.1f} MiB, fds {self.fds} ({kinds}), threads {self.threads}, "
            f"WAL {self.wal_kib:.0f} KiB, DB {self.db_kib:.0f} KiB"
        )


def fd_kinds(pid: int, server_port: int | None = None) -> Counter[str]:
    """The process's open descriptors by kind: pipe, anon_inode, the file's name (Linux), and its TCP
    sockets by role: ``socket:listen``, ``socket:clients`` (accepted on ``server_port``) and
    ``socket:upstream`` (opened by the server: Ollama and the providers, kept alive by their pools)."""
    kinds: Counter[str] = Counter()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir() if fd_dir.exists() else ():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        kinds[target.split(":", 1)[0] if ":" in target else Path(target).name] += 1
    try:
        conns = psutil.Process(pid).net_connections(kind="inet")
    except psutil.Error:
        return kinds
    for conn in conns:
        if conn.fd < 0:
            continue
        if conn.status == psutil.CONN_LISTEN:
            role = "listen"
        elif server_port is not None and conn.laddr and conn.laddr.port == server_port:
            role = "clients"
        else:
            role = "upstream"
        kinds[f"socket:{role}"] += 1
        kinds["socket"] -= 1
    kinds += Counter()  # drops a zero "socket"
    return kinds


def probe(mt: ModelTrain) -> Probe:
    p = psutil.Process(mt.proc.pid)
    db = Path(mt.data_dir) / "modeltrain.db"
    wal = db.with_name(db.name + "-wal")
    return Probe(
        rss=p.memory_info().rss / 2**20,
        fds=p.num_fds(),
        threads=p.num_threads(),
        wal_kib=(wal.stat().st_size / 1024) if wal.exists() else 0.0,
        db_kib=(db.stat().st_size / 1024) if db.exists() else 0.0,
        fd_kinds=fd_kinds(mt.proc.pid, urlsplit(mt.url).port),
    )


def growth(start: float, end: float) -> str:
    return f"{(end - start) / start * 100:+.1f} %" if start else "n/a"


@dataclass
class Sampler:
    """Samples the server's RSS, CPU % (of one core) and WAL size every ``interval`` s in a thread."""

    mt: ModelTrain
    interval: float = 0.25
    rss: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    wal: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        proc = psutil.Process(self.mt.proc.pid)
        proc.cpu_percent(None)

        def run() -> None:
            while not self._stop.wait(self.interval):
                p = probe(self.mt)
                self.rss.append(p.rss)
                self.wal.append(p.wal_kib)
                self.cpu.append(proc.cpu_percent(None))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Sampler:
        self._stop.set()
        if self._thread:
            self._thread.join()
        return self

    def cpu_mean(self) -> float:
        return sum(self.cpu) / len(self.cpu) if self.cpu else float("nan")


def auth(mt: ModelTrain) -> dict[str, str]:
    return {"Authorization": f"Bearer {mt.token}"}


async def timed_get(client: httpx.AsyncClient, mt: ModelTrain, path: str) -> tuple[float, int, dict]:
    """(seconds, status, JSON body) of one GET as the admin."""
    t0 = time.perf_counter()
    r = await client.get(f"{mt.url}{path}", headers=auth(mt))
    took = time.perf_counter() - t0
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    return took, r.status_code, body


def seed_conversations(mt: ModelTrain, model_id: str, n: int) -> list[str]:
    """``n`` short conversations (one chat each, through the real chat route); returns their ids."""
    rng = random.Random(1)
    with httpx.Client(base_url=mt.url, headers=auth(mt), timeout=120) as c:
        for _ in range(n):
            with c.stream("POST", "/api/chat", json={"model": model_id, "content": prompt(rng)}) as r:
                r.raise_for_status()
                for _ in r.iter_bytes():
                    pass
        items = c.get("/api/conversations", params={"size": 200}).json()["items"]
    return [i["id"] for i in items]


@dataclass
class ChatOutcome:
    ok: bool
    ttft: float = 0.0
    total: float = 0.0
    hung_up: bool = False
    error: str = ""
    conversation_id: str | None = None


async def chat_stream(
    client: httpx.AsyncClient,
    mt: ModelTrain,
    model_id: str,
    content: str,
    conversation_id: str | None = None,
    hang_up_after: int = 0,
) -> ChatOutcome:
    """POST /api/chat and read the SSE reply; with ``hang_up_after`` > 0, close the connection after that
    many ``delta`` events (a client that goes away mid-stream)."""
    body: dict = {"model": model_id, "content": content}
    if conversation_id:
        body["conversation_id"] = conversation_id
    t0 = time.perf_counter()
    ttft = 0.0
    deltas = 0
    buf = ""
    conv: str | None = None
    async with client.stream("POST", f"{mt.url}/api/chat", json=body, headers=auth(mt)) as r:
        if r.status_code != 200:
            await r.aread()
            return ChatOutcome(False, error=f"HTTP {r.status_code} {r.text[:120]}")
        async for chunk in r.aiter_text():
            buf += chunk
            if conv is None and (m := _CONV.search(buf)):
                conv = m.group(1)
            n = buf.count("event: delta")
            if n and not ttft:
                ttft = time.perf_counter() - t0
            if hang_up_after and n >= hang_up_after:
                return ChatOutcome(True, ttft, time.perf_counter() - t0, hung_up=True, conversation_id=conv)
            if n > deltas:
                deltas = n
                buf = buf[buf.rfind("event:") :]  # keep the tail only
    total = time.perf_counter() - t0
    if "event: done" not in buf:
        err = buf[buf.find("event: error") :][:200] if "event: error" in buf else "no done event"
        return ChatOutcome(False, ttft, total, error=err, conversation_id=conv)
    return ChatOutcome(True, ttft, total, conversation_id=conv)
