"""Conversations API: list/paging/order, detail, update, delete, search, export/import, isolation (C1)."""

from __future__ import annotations

import copy
import hashlib
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.db.models import Conversation, Message
from tests.server.chat_support import chat_model, fake_ollama, parse_sse  # noqa: F401  (fixtures)
from tests.server.conftest import bearer


@pytest.fixture
def settings(make_settings):
    # No background title requests: they would change rows while a test compares DB snapshots.
    return make_settings(chat_title_generation=False)


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
            {"id": "u1", "parent_id": None, "role": "user", "content": f"Where are the best {words}?",
             "created_at": t.format(1), "updated_at": t.format(1)},
            {"id": "a1", "parent_id": "u1", "role": "assistant", "content": "The Alps.", "model": "m/one",
             "status": "complete", "usage": {"prompt_tokens": 5, "completion_tokens": 3},
             "timings": {"total_ms": 12.5}, "created_at": t.format(2), "updated_at": t.format(2)},
            {"id": "a2", "parent_id": "u1", "role": "assistant", "content": "The Andes, partly", "model": "m/two",
             "status": "stopped", "created_at": t.format(3), "updated_at": t.format(3)},
            {"id": "u2", "parent_id": "a1", "role": "user", "content": "And lakes?", "created_at": t.format(4)},
            {"id": "a3", "parent_id": "u2", "role": "assistant", "content": "", "status": "error",
             "error": {"code": "upstream_busy", "message": "busy"}, "thinking": "hmm",
             "created_at": t.format(5)},
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
    assert set(page1["items"][0]) >= {"id", "title", "pinned", "model", "created_at", "updated_at", "message_count"}
    bad = client.get("/api/conversations?page=0", headers=bearer(user_token))
    assert bad.status_code == 422 and set(bad.json()) == {"code", "message", "detail"}


def test_detail_has_every_branch(client: TestClient, user_token: str) -> None:
    ids = do_import(client, user_token, [branched_conversation()])["ids"]
    d = client.get(f"/api/conversations/{ids['c1']}", headers=bearer(user_token)).json()
    assert d["system_prompt"] == "Be brief." and d["options"] == {"temperature": 0.3}
    assert [m["content"] for m in d["messages"]] == [
        "Where are the best mountains?", "The Alps.", "The Andes, partly", "And lakes?", "",
    ]
    by_content = {m["content"]: m for m in d["messages"]}
    assert by_content["The Alps."]["parent_id"] == by_content["The Andes, partly"]["parent_id"]
    assert by_content["The Andes, partly"]["status"] == "stopped"
    keys = {"id", "parent_id", "role", "content", "thinking", "status", "model", "created_at", "updated_at",
            "usage", "timings", "error"}
    assert set(d["messages"][0]) == keys


def test_patch_title_sets_title_edited_and_validates(client: TestClient, user_token: str) -> None:
    c = branched_conversation()
    c["title_edited"] = False
    cid = do_import(client, user_token, [c])["ids"]["c1"]
    r = client.patch(
        f"/api/conversations/{cid}",
        json={"title": "  New   name ", "system_prompt": "Speak French.", "options": {"temperature": 1.1}, "model": "m/x"},
        headers=bearer(user_token),
    )
    assert r.status_code == 200
    body = r.json()
    assert body["title"] == "New name" and body["title_edited"] is True
    assert body["system_prompt"] == "Speak French." and body["options"] == {"temperature": 1.1}
    assert body["model"] == "m/x"
    for bad in ({"title": "   "}, {"options": {"temperature": 9}}, {"user_id": str(uuid.uuid4())}, {"title_edited": False}):
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


def test_search_finds_titles_and_messages_with_snippets(client: TestClient, user_token: str) -> None:
    a = branched_conversation(title="Holiday ideas", words="volcanoes")
    b = branched_conversation(title="Volcanoes of Iceland", words="beaches")
    b["id"] = "c2"
    ids = do_import(client, user_token, [a, b])["ids"]
    r = client.get("/api/conversations/search", params={"q": "volcanoes"}, headers=bearer(user_token))
    assert r.status_code == 200
    hits = {h["id"]: h for h in r.json()["items"]}
    assert set(hits) == {ids["c1"], ids["c2"]}
    msg_hit = hits[ids["c1"]]
    assert msg_hit["message_id"] is not None
    start, end = msg_hit["highlights"][0]
    assert msg_hit["snippet"][start:end].lower() == "volcanoes"
    assert "\ue000" not in msg_hit["snippet"]
    title_hit = hits[ids["c2"]]
    assert title_hit["message_id"] is None and "Volcanoes" in title_hit["snippet"]
    # prefix match, case and diacritics folded
    assert client.get("/api/conversations/search?q=VOLCAN", headers=bearer(user_token)).json()["total"] == 2
    assert client.get("/api/conversations/search?q=alps", headers=bearer(user_token)).json()["total"] == 2


@pytest.mark.parametrize(
    "q",
    ['"unbalanced AND (', "NOT", "a OR", "title:x", "*", "^start", "NEAR(a b", '""', "'; DROP TABLE messages; --",
     "%_", "\\", "a\x00b", "volcanoes)"],
)
def test_search_survives_fts_syntax(client: TestClient, user_token: str, q: str) -> None:
    do_import(client, user_token, [branched_conversation(words="volcanoes")])
    r = client.get("/api/conversations/search", params={"q": q}, headers=bearer(user_token))
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["items"], list)


def test_search_words_inside_fts_syntax_still_match(client: TestClient, user_token: str) -> None:
    do_import(client, user_token, [branched_conversation(words="unbalanced")])
    r = client.get("/api/conversations/search", params={"q": '"unbalanced AND ('}, headers=bearer(user_token))
    # the words are "unbalanced" and "AND": both must occur
    assert r.status_code == 200 and r.json()["total"] == 0
    r = client.get("/api/conversations/search", params={"q": '"unbalanced ('}, headers=bearer(user_token))
    assert r.json()["total"] == 1


def test_search_cjk_text(client: TestClient, user_token: str) -> None:
    c = branched_conversation(title="旅行计划", words="山脉")
    do_import(client, user_token, [c])
    assert client.get("/api/conversations/search?q=山脉", headers=bearer(user_token)).json()["total"] == 1
    assert client.get("/api/conversations/search?q=计划", headers=bearer(user_token)).json()["total"] == 1


@pytest.mark.sqlite_only
def test_frequent_word_snippets_match_the_exact_ones(client: TestClient, user_token: str, monkeypatch) -> None:
    # For a frequent word the page's messages are checked in Python instead of reading every match from
    # the index: the hits (message, snippet, highlights) must be the same, also for diacritics,
    # prefixes, several words and words that only appear inside other words.
    from server.services import conversations as conversations_service

    texts = ["Un café crème, s'il vous plaît", "CAFE au lait and a croissant", "Decaffeinated coffee only",
             "Rivers: the Rhône and the Rhine", "the river is wide; cafés line it", "nothing to see"]
    convs = []
    for i, text in enumerate(texts):
        c = branched_conversation(title=f"t{i}", words="x")
        c["id"] = f"c{i}"
        c["messages"][1]["content"] = f"Answer {i}: {text}"
        convs.append(c)
    do_import(client, user_token, convs)

    def search(q: str) -> dict:
        return client.get("/api/conversations/search", params={"q": q}, headers=bearer(user_token)).json()

    queries = ["cafe", "CAFÉ", "caf", "rhone", "riv", "cafe river", "affein", "see"]
    exact = {q: search(q) for q in queries}
    monkeypatch.setattr(conversations_service, "_FREQUENT_MATCHES", 0)
    assert {q: search(q) for q in queries} == exact
    assert exact["cafe"]["total"] == 3 and exact["affein"]["total"] == 0 and exact["riv"]["total"] == 2


def test_search_page_past_the_end_still_counts(client: TestClient, user_token: str) -> None:
    do_import(client, user_token, numbered(3, "fjords"))
    r = client.get("/api/conversations/search?q=fjords&size=2&page=3", headers=bearer(user_token)).json()
    assert r["items"] == [] and r["total"] == 3
    r = client.get("/api/conversations/search?q=nowhere&size=2", headers=bearer(user_token)).json()
    assert r["items"] == [] and r["total"] == 0


def test_search_paging(client: TestClient, user_token: str) -> None:
    do_import(client, user_token, numbered(7, "dunes"))
    p1 = client.get("/api/conversations/search?q=dunes&size=5", headers=bearer(user_token)).json()
    p2 = client.get("/api/conversations/search?q=dunes&size=5&page=2", headers=bearer(user_token)).json()
    assert p1["total"] == 7 and len(p1["items"]) == 5 and len(p2["items"]) == 2
    assert not {h["id"] for h in p1["items"]} & {h["id"] for h in p2["items"]}


# --- export / import --------------------------------------------------------------------------------


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
    assert client.get(f"/api/conversations/{cid}/export?format=pdf", headers=bearer(user_token)).status_code == 422


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


# --- isolation (security.md C1) ------------------------------------------------------------------------


def test_cross_user_sweep_answers_404_and_changes_nothing(client: TestClient, user_token: str, create_user, chat_model) -> None:
    r = client.post("/api/chat", json={"model": chat_model.id, "content": "secret plans"}, headers=bearer(user_token))
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
        "/api/chat", json={"model": chat_model.id, "content": "x", "conversation_id": own_conv, "parent_id": amsg},
        headers=h,
    )
    assert mixed.status_code == 404
    assert client.get("/api/conversations", headers=h).json()["total"] == 1
    assert client.get("/api/conversations/search?q=secret", headers=h).json()["total"] == 0
    assert "secret" not in client.get("/api/conversations/export", headers=h).text
    after_intruder = [c for c in client.get("/api/conversations", headers=bearer(user_token)).json()["items"]]
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


@pytest.mark.parametrize("frequent", [False, True])
def test_search_strategies_for_rare_and_frequent_words_agree(
    client: TestClient, user_token: str, create_user, monkeypatch, frequent: bool
) -> None:
    from server.services import conversations as conversations_service

    if frequent:  # force the per-conversation probing used for very frequent words
        monkeypatch.setattr(conversations_service, "_FREQUENT_MATCHES", 0)
    convs = []
    for i in range(4):
        c = branched_conversation(title=f"t{i}", words="oases" if i % 2 else "canyons")
        c["id"] = f"c{i}"
        convs.append(c)
    do_import(client, user_token, convs)
    other = create_user("someone@example.com")
    do_import(client, other, convs)
    r = client.get("/api/conversations/search?q=oases", headers=bearer(user_token)).json()
    assert r["total"] == 2 and all(h["message_id"] for h in r["items"])
    assert {h["title"] for h in r["items"]} == {"t1", "t3"}
