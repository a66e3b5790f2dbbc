"""Conversations API: list/paging/order, detail, update, delete, isolation (docs/security.md, C1).
Search is in tests/server/services/test_conversation_search.py, export and import in
tests/server/services/test_conversation_transfer.py."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from server.db.models import Conversation, Message
from server.settings import Settings
from tests.server.chat_support import parse_sse
from tests.server.conftest import bearer
from tests.server.conversation_support import branched_conversation, db_snapshot, do_import


@pytest.fixture
def settings(conversation_settings: Settings) -> Settings:
    return conversation_settings


# --- list, detail, update, delete -------------------------------------------------------------------


def test_list_is_paged_newest_first_with_pinned_first(client: TestClient, user_token: str) -> None:
    convs = []
    for i in range(5):
        c = branched_conversation(title=f"conv {i}")
        c["id"] = f"c{i}"
        c["updated_at"] = f"2026-01-0{i + 1}T00:00:00Z"
        convs.append(c)
    ids = do_import(client, user_token, convs)["ids"]
    r = client.patch(f"/api/conversations/{ids['c1']}", json={"pinned": True}, headers=bearer(user_token))
    assert r.status_code == 200 and r.json()["pinned"] is True
    page1 = client.get("/api/conversations?page=1&size=3", headers=bearer(user_token)).json()
    page2 = client.get("/api/conversations?page=2&size=3", headers=bearer(user_token)).json()
    assert page1["total"] == page2["total"] == 5 and page1["size"] == 3
    titles = [c["title"] for c in page1["items"] + page2["items"]]
    assert titles[0] == "conv 1"  # pinned (its update is newest now, but pinned wins regardless)
    assert titles[1:] == ["conv 4", "conv 3", "conv 2", "conv 0"]
    assert page1["items"][1]["message_count"] == 5
    assert set(page1["items"][0]) >= {
        "id",
        "title",
        "pinned",
        "model",
        "created_at",
        "updated_at",
        "message_count",
    }
    bad = client.get("/api/conversations?page=0", headers=bearer(user_token))
    assert bad.status_code == 422 and set(bad.json()) == {"code", "message", "detail"}


def test_detail_has_every_branch(client: TestClient, user_token: str) -> None:
    ids = do_import(client, user_token, [branched_conversation()])["ids"]
    d = client.get(f"/api/conversations/{ids['c1']}", headers=bearer(user_token)).json()
    assert d["system_prompt"] == "Be brief." and d["options"] == {"temperature": 0.3}
    assert [m["content"] for m in d["messages"]] == [
        "Where are the best mountains?",
        "The Alps.",
        "The Andes, partly",
        "And lakes?",
        "",
    ]
    by_content = {m["content"]: m for m in d["messages"]}
    assert by_content["The Alps."]["parent_id"] == by_content["The Andes, partly"]["parent_id"]
    assert by_content["The Andes, partly"]["status"] == "stopped"
    keys = {
        "id",
        "parent_id",
        "role",
        "content",
        "thinking",
        "status",
        "model",
        "created_at",
        "updated_at",
        "usage",
        "timings",
        "error",
        "served_by",
        "attachments",
        "citations",
    }
    assert set(d["messages"][0]) == keys
    assert d["messages"][0]["attachments"] == [] and d["messages"][0]["citations"] is None
    assert d["messages"][0]["served_by"] is None  # not a routed model


def test_patch_title_sets_title_edited_and_validates(client: TestClient, user_token: str) -> None:
    c = branched_conversation()
    c["title_edited"] = False
    cid = do_import(client, user_token, [c])["ids"]["c1"]
    r = client.patch(
        f"/api/conversations/{cid}",
        json={
            "title": "  New   name ",
            "system_prompt": "Speak French.",
            "options": {"temperature": 1.1},
            "model": "m/x",
        },
        headers=bearer(user_token),
    )
    assert r.status_code == 200
    body = r.json()
    assert body["title"] == "New name" and body["title_edited"] is True
    assert body["system_prompt"] == "Speak French." and body["options"] == {"temperature": 1.1}
    assert body["model"] == "m/x"
    for bad in (
        {"title": "   "},
        {"options": {"temperature": 9}},
        {"user_id": str(uuid.uuid4())},
        {"title_edited": False},
    ):
        r = client.patch(f"/api/conversations/{cid}", json=bad, headers=bearer(user_token))
        assert r.status_code == 422, bad


def test_delete_removes_conversation_messages_and_search_entries(client: TestClient, user_token: str) -> None:
    cid = do_import(client, user_token, [branched_conversation(words="glaciers")])["ids"]["c1"]
    assert client.get("/api/conversations/search?q=glaciers", headers=bearer(user_token)).json()["total"] == 1
    assert client.delete(f"/api/conversations/{cid}", headers=bearer(user_token)).status_code == 204
    assert client.get(f"/api/conversations/{cid}", headers=bearer(user_token)).status_code == 404
    assert client.get("/api/conversations/search?q=glaciers", headers=bearer(user_token)).json()["total"] == 0
    with client.app.state.runtime.session_factory() as s:
        assert s.query(Message).count() == 0


# --- search -----------------------------------------------------------------------------------------

# --- isolation (docs/security.md, C1) -----------------------------------------------------------------


def test_cross_user_sweep_answers_404_and_changes_nothing(
    client: TestClient, user_token: str, create_user, chat_model
) -> None:
    r = client.post(
        "/api/chat", json={"model": chat_model.id, "content": "secret plans"}, headers=bearer(user_token)
    )
    meta = parse_sse(r.text)[0][0].data
    conv, umsg, amsg = meta["conversation_id"], meta["user_message_id"], meta["assistant_message_id"]
    intruder = create_user("intruder@example.com")
    h = bearer(intruder)
    before = db_snapshot(client)
    calls = [
        ("GET", f"/api/conversations/{conv}", None),
        ("PATCH", f"/api/conversations/{conv}", {"title": "pwned"}),
        ("PATCH", f"/api/conversations/{conv}", {"pinned": True}),
        ("DELETE", f"/api/conversations/{conv}", None),
        ("GET", f"/api/conversations/{conv}/export", None),
        ("GET", f"/api/conversations/{conv}/export?format=markdown", None),
        ("POST", "/api/chat", {"model": chat_model.id, "content": "x", "conversation_id": conv}),
        ("POST", "/api/chat", {"model": chat_model.id, "content": "x", "parent_id": amsg}),
        ("POST", "/api/chat", {"model": chat_model.id, "content": "x", "parent_id": umsg}),
        ("POST", f"/api/chat/{amsg}/regenerate", {}),
        ("POST", f"/api/chat/{umsg}/regenerate", {}),
        ("POST", f"/api/chat/{amsg}/stop", None),
    ]
    for method, path, body in calls:
        r = client.request(method, path, json=body, headers=h)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.json()["code"] in ("conversation_not_found", "message_not_found")
    assert db_snapshot(client) == before  # nothing changed, nothing was added
    # a parent from another conversation of the intruder's own is refused too
    own = client.post("/api/chat", json={"model": chat_model.id, "content": "mine"}, headers=h)
    own_conv = parse_sse(own.text)[0][0].data["conversation_id"]
    mixed = client.post(
        "/api/chat",
        json={"model": chat_model.id, "content": "x", "conversation_id": own_conv, "parent_id": amsg},
        headers=h,
    )
    assert mixed.status_code == 404
    assert client.get("/api/conversations", headers=h).json()["total"] == 1
    assert client.get("/api/conversations/search?q=secret", headers=h).json()["total"] == 0
    assert "secret" not in client.get("/api/conversations/export", headers=h).text
    after_intruder = list(client.get("/api/conversations", headers=bearer(user_token)).json()["items"])
    assert len(after_intruder) == 1 and after_intruder[0]["title"] == "secret plans"
    with client.app.state.runtime.session_factory() as s:
        victim_rows = s.query(Message).filter(Message.conversation_id == uuid.UUID(conv)).count()
    assert victim_rows == 2
    # the victim's rows are unchanged (the intruder's own conversation is the only new data)
    with client.app.state.runtime.session_factory() as s:
        c = s.get(Conversation, uuid.UUID(conv))
        assert c.title == "secret plans" and c.pinned is False
    assert before != db_snapshot(client)  # sanity: the snapshot does see the intruder's own chat


def test_unauthenticated_requests_are_401(client: TestClient) -> None:
    cid = uuid.uuid4()
    for method, path in [
        ("GET", "/api/conversations"),
        ("GET", f"/api/conversations/{cid}"),
        ("GET", "/api/conversations/search?q=x"),
        ("GET", "/api/conversations/export"),
    ]:
        assert client.request(method, path).status_code == 401
