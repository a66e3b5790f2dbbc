"""Helpers for the ``/api/ollama`` tests: a fake Ollama server wired in through the settings, an injected
free-space function for the pull manager, and SSE readers. Import the fixtures you use into the test
module."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.server.conftest import bearer

PULL = "tinyllama"  # in the fake registry, not installed


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(pull_tick=0.01) as server:
        yield server


@pytest.fixture
def settings(make_settings: Callable[..., Settings], fake: FakeOllama, tmp_path: Path) -> Settings:
    (tmp_path / "models").mkdir()
    return make_settings(
        ollama_url=fake.url,
        ollama_models_dir=tmp_path / "models",
        ollama_disk_reserve_bytes=0,
        ollama_pull_stall_seconds=0.15,
    )


@pytest.fixture
def disk(client: TestClient) -> dict:
    """Inject the free-space function of the pull manager: ``disk["free"]`` bytes, paths asked."""
    state: dict = {"free": 10**15, "asked": []}

    def free_space(path: Path) -> int:
        state["asked"].append(path)
        return state["free"]

    client.app.state.runtime.ollama_pulls.free_space = free_space
    return state


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    event, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])


def read_until_final(response: httpx.Response) -> list[tuple[str, dict]]:
    events = []
    for event, data in sse_events(response):
        events.append((event, data))
        if event in ("done", "error"):
            break
    return events


def pulls(client: TestClient, token: str) -> list[dict]:
    r = client.get("/api/ollama/pulls", headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def pull_state(client: TestClient, token: str, name: str) -> str | None:
    for item in pulls(client, token):
        if item["name"] == name:
            return item["state"]
    return None
