"""Helpers for the chat and conversation tests: a fake Ollama wired in as a chat model, an SSE parser,
a real uvicorn server on loopback (for disconnects, which the in-process TestClient cannot make),
and DB write counting. Its fixtures are re-exported by tests/server/conftest.py."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import event

from tests.fakes.fake_ollama import FakeOllama

MODEL_ID = "test-ollama/llama3.2"
UPSTREAM_MODEL = "llama3.2:latest"


@dataclass
class SSEEvent:
    event: str
    data: Any


def parse_sse(raw: str) -> tuple[list[SSEEvent], list[str]]:
    """Events (data JSON-decoded) and comment lines of an SSE body, parsed by the WHATWG rules."""
    events: list[SSEEvent] = []
    comments: list[str] = []
    name, data = "", []
    for line in raw.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                events.append(SSEEvent(name or "message", value))
            name, data = "", []
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
    return events, comments


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Bounded polling: True as soon as ``predicate()`` holds, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@dataclass
class ChatModel:
    """The model id to send in chat requests, and the fake behind it."""

    id: str
    fake: FakeOllama
    resolved: list[str] = field(default_factory=list)


def install_fake_model(
    monkeypatch: pytest.MonkeyPatch,
    fake: Any,
    model_id: str = MODEL_ID,
    *,
    kind: str = "ollama",
    upstream_model: str | None = None,
) -> ChatModel:
    """Make ``model_id`` resolve to the fake Ollama through the real Ollama adapter.

    The chat pipeline resolves models through ``server.services.models.resolve_model``; this replaces
    only that lookup, so everything from the adapter to the database is the production code."""
    from server.errors import NotFound
    from server.providers.ollama import OllamaProvider
    from server.providers.openai_compat import OpenAICompatProvider
    from server.services import chat as chat_service

    chat_model = ChatModel(model_id, fake)
    clients: list[httpx.AsyncClient] = []

    class Resolved:
        def __init__(self) -> None:
            if not clients:
                clients.append(httpx.AsyncClient(timeout=None, follow_redirects=False))
            self.provider = None
            if kind == "openai":
                self.adapter = OpenAICompatProvider(fake.url, clients[0], api_key="sk-test")
                self.upstream_model = upstream_model or "gpt-4o-mini"
            else:
                self.adapter = OllamaProvider(fake.url, clients[0])
                self.upstream_model = upstream_model or UPSTREAM_MODEL
            self.defaults = {"system_prompt": "", "options": {}}

    def resolve(session, runtime, requested: str, user_id=None):
        chat_model.resolved.append(requested)
        if requested != model_id:
            raise NotFound("model not found", code="model_not_found")
        return Resolved()

    monkeypatch.setattr(chat_service, "_resolve", resolve)
    monkeypatch.setattr(chat_service, "_usage_model", lambda session, user_id, resolved: model_id)
    return chat_model


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
def chat_model(monkeypatch: pytest.MonkeyPatch, fake_ollama: FakeOllama) -> ChatModel:
    return install_fake_model(monkeypatch, fake_ollama)


class WriteCounter:
    """Counts UPDATE statements on the messages table (the batched reply writes)."""

    def __init__(self) -> None:
        self.message_updates = 0

    def __call__(self, conn, cursor, statement: str, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("UPDATE MESSAGES"):
            self.message_updates += 1


@contextmanager
def count_message_writes(app: FastAPI) -> Iterator[WriteCounter]:
    engine = app.state.runtime.engine
    counter = WriteCounter()
    event.listen(engine, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", counter)


@dataclass
class LiveServer:
    url: str
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextmanager
def live_server(app: FastAPI) -> Iterator[LiveServer]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread (lifespan included)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5, ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, timeout=15), "uvicorn did not start"
    live = LiveServer(f"http://127.0.0.1:{port}", app, server, thread)
    try:
        yield live
    finally:
        live.stop()
        sock.close()


def message_row(app: FastAPI, message_id: str | uuid.UUID) -> dict[str, Any]:
    from server.db.models import Message

    with app.state.runtime.session_factory() as session:
        m = session.get(Message, uuid.UUID(str(message_id)))
        assert m is not None
        return {
            "status": m.status,
            "content": m.content,
            "error": m.error,
            "role": m.role,
            "parent_id": m.parent_id,
            "updated_at": m.updated_at,
        }
