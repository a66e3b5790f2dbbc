"""Helpers for the conversation tests: an export document builder with a branched conversation, and a
database snapshot. Their settings without background titles are ``conversation_settings`` in
tests/server/conftest.py."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi.testclient import TestClient

from server.db.models import Conversation, Message
from tests.server.conftest import bearer


def export_doc(conversations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": "modeltrain.conversations",
        "version": 1,
        "exported_at": "2026-01-01T00:00:00Z",
        "conversations": conversations,
    }


def branched_conversation(title: str = "Trip planning", words: str = "mountains") -> dict[str, Any]:
    """One conversation with two assistant replies to the first prompt and an edited second prompt."""
    t = "2026-01-02T10:00:0{}Z"
    return {
        "id": "c1",
        "title": title,
        "title_edited": True,
        "pinned": False,
        "model": "m/one",
        "system_prompt": "Be brief.",
        "options": {"temperature": 0.3},
        "created_at": t.format(0),
        "updated_at": t.format(9),
        "messages": [
            {
                "id": "u1",
                "parent_id": None,
                "role": "user",
                "content": f"Where are the best {words}?",
                "created_at": t.format(1),
                "updated_at": t.format(1),
            },
            {
                "id": "a1",
                "parent_id": "u1",
                "role": "assistant",
                "content": "The Alps.",
                "model": "m/one",
                "status": "complete",
                "usage": {"prompt_tokens": 5, "completion_tokens": 3},
                "timings": {"total_ms": 12.5},
                "created_at": t.format(2),
                "updated_at": t.format(2),
            },
            {
                "id": "a2",
                "parent_id": "u1",
                "role": "assistant",
                "content": "The Andes, partly",
                "model": "m/two",
                "status": "stopped",
                "created_at": t.format(3),
                "updated_at": t.format(3),
            },
            {
                "id": "u2",
                "parent_id": "a1",
                "role": "user",
                "content": "And lakes?",
                "created_at": t.format(4),
            },
            {
                "id": "a3",
                "parent_id": "u2",
                "role": "assistant",
                "content": "",
                "status": "error",
                "error": {"code": "upstream_busy", "message": "busy"},
                "thinking": "hmm",
                "created_at": t.format(5),
            },
        ],
    }


def numbered(count: int, words: str) -> list[dict[str, Any]]:
    """``count`` conversations t0, t1... with ids c0, c1..., each mentioning ``words``."""
    convs = []
    for i in range(count):
        c = branched_conversation(title=f"t{i}", words=words)
        c["id"] = f"c{i}"
        convs.append(c)
    return convs


def do_import(client: TestClient, token: str, convs: list[dict[str, Any]]) -> dict[str, Any]:
    r = client.post("/api/conversations/import", json=export_doc(convs), headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json()


def db_snapshot(client: TestClient) -> str:
    runtime = client.app.state.runtime
    with runtime.session_factory() as s:
        rows = [
            (str(c.id), c.title, c.pinned, c.system_prompt, str(c.options), c.updated_at.isoformat())
            for c in s.query(Conversation).order_by(Conversation.id)
        ] + [
            (str(m.id), m.content, m.status, str(m.parent_id)) for m in s.query(Message).order_by(Message.id)
        ]
    return hashlib.sha256(repr(rows).encode()).hexdigest()
