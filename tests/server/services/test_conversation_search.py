"""``/api/conversations/search``: titles and messages, snippets and highlights, FTS syntax in queries,
CJK text, paging, and the strategies for rare and frequent words."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.server.conftest import bearer
from tests.server.conversation_support import branched_conversation, do_import, numbered


@pytest.fixture
def settings(conversation_settings: Settings) -> Settings:
    return conversation_settings


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
    [
        '"unbalanced AND (',
        "NOT",
        "a OR",
        "title:x",
        "*",
        "^start",
        "NEAR(a b",
        '""',
        "'; DROP TABLE messages; --",
        "%_",
        "\\",
        "a\x00b",
        "volcanoes)",
    ],
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
def test_frequent_word_snippets_match_the_exact_ones(
    client: TestClient, user_token: str, monkeypatch
) -> None:
    # For a frequent word the page's messages are checked in Python instead of reading every match from
    # the index: the hits (message, snippet, highlights) must be the same, also for diacritics,
    # prefixes, several words and words that only appear inside other words.
    from server.services import conversation_search

    texts = [
        "Un café crème, s'il vous plaît",
        "CAFE au lait and a croissant",
        "Decaffeinated coffee only",
        "Rivers: the Rhône and the Rhine",
        "the river is wide; cafés line it",
        "nothing to see",
    ]
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
    monkeypatch.setattr(conversation_search, "_FREQUENT_MATCHES", 0)
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


@pytest.mark.parametrize("frequent", [False, True])
def test_search_strategies_for_rare_and_frequent_words_agree(
    client: TestClient, user_token: str, create_user, monkeypatch, frequent: bool
) -> None:
    from server.services import conversation_search

    if frequent:  # force the per-conversation probing used for very frequent words
        monkeypatch.setattr(conversation_search, "_FREQUENT_MATCHES", 0)
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
