"""Shared plumbing of the chat benchmarks: a fake Ollama and ModelTrain, each in its own process (so the
load generator in this process does not share a GIL with either), an admin token, streaming clients
for both the direct (NDJSON) and the ModelTrain (SSE) path."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-initial-password-1"
NEW_PASSWORD = "bench-password-changed-2"
UPSTREAM_MODEL = "llama3.2:latest"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _wait(url: str, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client() as c:
        while time.monotonic() < deadline:
            try:
                if c.get(url, timeout=0.5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"{what} exited during start-up")
            time.sleep(0.02)
    raise SystemExit(f"{what} did not start")


def start_fake(token_delay: float, reply_tokens: int = 0) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.fake_ollama",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--token-delay",
            str(token_delay),
            "--reply-tokens",
            str(reply_tokens),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    _wait(f"{url}/api/version", proc, "fake Ollama")
    return proc, url


@dataclass
class ModelTrain:
    proc: subprocess.Popen
    url: str
    data_dir: Path
    token: str

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_modeltrain(ollama_url: str, data_dir: Path | None = None, **env_extra: str) -> ModelTrain:
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="mt-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "MODELTRAIN_DATA_DIR": str(data_dir),
        "INITIAL_ADMIN_PASSWORD": PASSWORD,
        "MODELTRAIN_OLLAMA_URL": ollama_url,
        "MODELTRAIN_MAX_STREAMS_PER_USER": "1000",
        "MODELTRAIN_CHAT_TITLE_GENERATION": "false",
        "LOG_LEVEL": "WARNING",
        **env_extra,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    _wait(f"{url}/api/health", proc, "ModelTrain")
    with httpx.Client(base_url=url) as c:
        r = c.post("/api/auth/login", json={"email": "admin@example.com", "password": PASSWORD})
        token = r.json()["access_token"]
        r = c.post(
            "/api/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers={"Authorization": f"Bearer {token}"},
        )
        token = r.json()["access_token"]
    return ModelTrain(proc, url, data_dir, token)


def add_ollama_provider(mt: ModelTrain, name: str, url: str) -> str:
    with httpx.Client(base_url=mt.url, headers={"Authorization": f"Bearer {mt.token}"}) as c:
        r = c.post("/api/providers", json={"name": name, "kind": "ollama", "base_url": url})
        r.raise_for_status()
        return r.json()["id"]


def model_ids(mt: ModelTrain) -> dict[str, str]:
    """provider base URL -> model id of llama3.2 on it."""
    with httpx.Client(base_url=mt.url, headers={"Authorization": f"Bearer {mt.token}"}) as c:
        providers = {p["id"]: p["base_url"] for p in c.get("/api/providers").json()["items"]}
        items = c.get("/api/models").json()["items"]
    return {providers[m["provider"]["id"]]: m["id"] for m in items if m["model"] == UPSTREAM_MODEL}


@dataclass
class StreamResult:
    ttft: float  # seconds to the first content token
    total: float  # seconds to the end of the stream
    tokens: int
    ok: bool
    error: str = ""


async def direct_stream(client: httpx.AsyncClient, ollama_url: str, prompt: str) -> StreamResult:
    body = {"model": UPSTREAM_MODEL, "messages": [{"role": "user", "content": prompt}], "stream": True}
    t0 = time.perf_counter()
    ttft = None
    tokens = 0
    buf = b""
    async with client.stream("POST", f"{ollama_url}/api/chat", json=body) as r:
        if r.status_code != 200:
            return StreamResult(0, 0, 0, False, f"HTTP {r.status_code}")
        async for chunk in r.aiter_bytes():
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                obj = json.loads(line)
                if obj.get("message", {}).get("content"):
                    tokens += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
    return StreamResult(ttft or 0.0, time.perf_counter() - t0, tokens, ttft is not None)


async def modeltrain_stream(
    client: httpx.AsyncClient, mt: ModelTrain, model_id: str, prompt: str
) -> StreamResult:
    t0 = time.perf_counter()
    ttft = None
    buf = ""
    async with client.stream(
        "POST",
        f"{mt.url}/api/chat",
        json={"model": model_id, "content": prompt},
        headers={"Authorization": f"Bearer {mt.token}"},
    ) as r:
        if r.status_code != 200:
            await r.aread()
            return StreamResult(0, 0, 0, False, f"HTTP {r.status_code} {r.text[:100]}")
        async for chunk in r.aiter_text():
            buf += chunk
            if ttft is None and "event: delta" in buf:
                ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    if "event: done" not in buf:
        err = buf[buf.find("event: error") :][:200] if "event: error" in buf else "no done event"
        return StreamResult(ttft or 0.0, total, 0, False, err)
    done = buf[buf.rfind("event: done") :]
    data = json.loads(done.split("data: ", 1)[1].split("\n", 1)[0])
    tokens = int((data.get("usage") or {}).get("completion_tokens", 0))
    return StreamResult(ttft or 0.0, total, tokens, ttft is not None)


def rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20
