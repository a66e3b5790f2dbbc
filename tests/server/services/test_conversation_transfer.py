"""Conversation export (JSON, Markdown) and all-or-nothing import."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.server.conftest import bearer
from tests.server.conversation_support import branched_conversation, db_snapshot, do_import, export_doc


@pytest.fixture
def settings(conversation_settings: Settings) -> Settings:
    return conversation_settings


def _strip_ids(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Conversations with ids replaced by positions, so two exports can be compared."""
    out = []
    for conv in doc["conversations"]:
        conv = copy.deepcopy(conv)
        index = {m["id"]: i for i, m in enumerate(conv["messages"])}
        for m in conv["messages"]:
            m["id"] = index[m["id"]]
            m["parent_id"] = index.get(m["parent_id"]) if m["parent_id"] else None
        conv.pop("id")
        out.append(conv)
    return out


def test_export_import_round_trip_is_lossless(client: TestClient, user_token: str, create_user) -> None:
    do_import(client, user_token, [branched_conversation()])
    first = client.get("/api/conversations/export", headers=bearer(user_token))
    assert first.status_code == 200 and "attachment" in first.headers["content-disposition"]
    doc = first.json()
    assert doc["format"] == "modeltrain.conversations" and doc["version"] == 1 and doc["exported_at"]
    other = create_user("other@example.com")
    result = client.post("/api/conversations/import", json=doc, headers=bearer(other)).json()
    assert result["imported"] == 1 and result["messages"] == 5
    new_id = next(iter(result["ids"].values()))
    assert new_id != doc["conversations"][0]["id"]  # ids are remapped
    again = client.get("/api/conversations/export", headers=bearer(other)).json()
    assert _strip_ids(again) == _strip_ids(doc)
    one = client.get(f"/api/conversations/{new_id}/export?format=json", headers=bearer(other)).json()
    assert _strip_ids(one) == _strip_ids(doc)


def test_markdown_export_shows_current_branch(client: TestClient, user_token: str) -> None:
    cid = do_import(client, user_token, [branched_conversation()])["ids"]["c1"]
    r = client.get(f"/api/conversations/{cid}/export?format=markdown", headers=bearer(user_token))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    text = r.text
    assert text.startswith("# Trip planning")
    assert "Where are the best mountains?" in text and "And lakes?" in text and "The Alps." in text
    assert "The Andes" not in text  # another branch
    assert "*(error)*" in text
    assert (
        client.get(f"/api/conversations/{cid}/export?format=pdf", headers=bearer(user_token)).status_code
        == 422
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="other"),
        lambda d: d.update(version=2),
        lambda d: d["conversations"][1]["messages"][3].update(parent_id="nope"),
        lambda d: d["conversations"][1]["messages"].append(dict(d["conversations"][1]["messages"][0])),
        lambda d: d["conversations"][1]["messages"][0].update(parent_id="a3"),  # u1 -> a3 -> u2 -> a1 -> u1
        lambda d: d["conversations"][1]["messages"][0].update(role="wizard"),
        lambda d: d["conversations"][1]["messages"][0].update(status="exploded"),
        lambda d: d["conversations"][1].update(created_at="yesterday"),
        lambda d: d["conversations"][1].update(created_at="2026-01-01T00:00:00"),  # no time zone
        lambda d: d["conversations"][1].update(user_id="someone"),
        lambda d: d.pop("conversations"),
        lambda d: d["conversations"].append(copy.deepcopy(d["conversations"][0])),  # duplicate ids
    ],
)
def test_bad_import_is_refused_and_nothing_is_imported(client: TestClient, user_token: str, mutate) -> None:
    good = branched_conversation()
    second = branched_conversation(title="second")
    second["id"] = "c2"
    doc = export_doc([good, second])
    mutate(doc)
    before = db_snapshot(client)
    r = client.post("/api/conversations/import", json=doc, headers=bearer(user_token))
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"code", "message", "detail"}
    assert db_snapshot(client) == before


def test_import_rejects_non_json_bodies(client: TestClient, user_token: str) -> None:
    r = client.post(
        "/api/conversations/import",
        content=b"{not json",
        headers={**bearer(user_token), "Content-Type": "application/json"},
    )
    assert r.status_code == 422
