"""Helpers for the ``/api/ollama`` tests: SSE readers and pull listings. Their fixtures (the fake Ollama
server ``fake``, ``ollama_settings`` wired to it, the injected free-space function ``disk``) are in
tests/server/conftest.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
from fastapi.testclient import TestClient

from tests.server.conftest import bearer

PULL = "tinyllama"  # in the fake registry, not installed


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
