"""POST /api/chat, regenerate, stop: streaming, batching, failures, timeouts, caps and recovery."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from server.app import create_app
from server.db.models import Conversation, Message
from server.services import chat as chat_service
from server.services import reply_owner
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.fake_openai import FakeOpenAI
from tests.server.chat_support import (
    count_message_writes,
    install_fake_model,
    live_server,
    message_row,
    parse_sse,
    wait_for,
)
from tests.server.conftest import BASE_URL, USER_PASSWORD, bearer, login


def chat(client: TestClient, token: str, body: dict) -> tuple[int, list, list, httpx.Response]:
    r = client.post("/api/chat", json=body, headers=bearer(token))
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        events, comments = parse_sse(r.text)
        return r.status_code, events, comments, r
    return r.status_code, [], [], r


def by_name(events: list, name: str) -> list:
    return [e for e in events if e.event == name]


def db_counts(app) -> tuple[int, int]:
    with app.state.runtime.session_factory() as s:
        return s.query(Conversation).count(), s.query(Message).count()


@pytest.fixture
def no_titles(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(chat_title_generation=False)


# --- the happy path ------------------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_signing_a_request_in_does_not_wait_for_the_write_lock(client, app, user_token) -> None:
    """Authentication only reads, so it never queues behind a writer (e.g. streams saving their
    replies): with another connection holding SQLite's write lock, a chat request with a bad body is
    still signed in and refused with 422 at once, instead of waiting out busy_timeout for the lock."""
    import sqlite3

    from server.db.session import sqlite_path

    holder = sqlite3.connect(sqlite_path(app.state.runtime.settings.database_url), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        r = client.post("/api/chat", json={"model": "m", "content": ""}, headers=bearer(user_token))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_input"


def test_stream_sends_meta_deltas_done_and_persists_the_reply(client, app, user_token, chat_model) -> None:
    chat_model.fake.token_delay = 0.02  # 50 tok/s: several coalesced delta events
    status, events, _, r = chat(
        client, user_token, {"model": chat_model.id, "content": "Tell me about rivers"}
    )
    assert status == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-accel-buffering"] == "no"
    names = [e.event for e in events]
    assert names[0] == "meta" and names[-2:] == ["done", "title"]  # a new conversation: titled after done
    deltas = by_name(events, "delta")
    assert len(deltas) >= 3
    text = "".join(d.data.get("content", "") for d in deltas)
    done = events[-2].data
    assert text == done["message"]["content"]
    assert "Tell me about rivers" in text
    assert done["message"]["status"] == "complete"
    assert done["usage"]["completion_tokens"] > len(deltas)  # coalesced: fewer events than tokens
    assert done["timings"]["first_token_ms"] >= 0
    meta = events[0].data
    row = message_row(app, meta["assistant_message_id"])
    assert row["status"] == "complete" and row["content"] == text
    prompt = message_row(app, meta["user_message_id"])
    assert prompt["role"] == "user" and prompt["content"] == "Tell me about rivers"
    assert row["parent_id"] == uuid.UUID(meta["user_message_id"])


def test_user_message_is_committed_before_the_upstream_is_called(client, app, user_token, chat_model) -> None:
    seen: list[list[str]] = []

    def reply(messages):  # runs inside the fake upstream when our request arrives
        with app.state.runtime.session_factory() as s:
            seen.append([m.content for m in s.query(Message).filter(Message.role == "user")])
        return "ok"

    chat_model.fake.reply = reply
    status, events, _, _ = chat(client, user_token, {"model": chat_model.id, "content": "persist me first"})
    assert status == 200 and [e.event for e in events][-2:] == ["done", "title"]
    assert seen[0] == ["persist me first"]  # (a later call is the title request)


def test_reply_is_written_in_batches_not_per_token(make_settings, monkeypatch) -> None:
    settings = make_settings(
        chat_title_generation=False, chat_persist_interval=0.05, chat_persist_bytes=10_000
    )
    app = create_app(settings)
    with FakeOllama(token_delay=0.005) as fake, TestClient(app, base_url=BASE_URL) as client:
        model = install_fake_model(monkeypatch, fake)
        token = _user(client)
        with count_message_writes(app) as writes:
            status, events, _, _ = chat(client, token, {"model": model.id, "content": "count the writes"})
        assert status == 200
        tokens = events[-1].data["usage"]["completion_tokens"]
        assert tokens >= 30
        # at least one intermediate batch plus the final write, but far fewer than one per token
        assert 2 <= writes.message_updates < tokens / 2


@pytest.mark.timeout(20)
def test_the_end_of_a_reply_is_sent_at_once_not_after_the_coalescing_interval(
    make_settings, monkeypatch
) -> None:
    # Deltas are held for chat_coalesce_ms; the last one and "done" must not wait for it. With a
    # 60 s interval, a stream that waited would hit this test's timeout.
    settings = make_settings(chat_title_generation=False, chat_coalesce_ms=60_000)
    app = create_app(settings)
    with FakeOllama(token_delay=0.005) as fake, TestClient(app, base_url=BASE_URL) as client:
        model = install_fake_model(monkeypatch, fake)
        token = _user(client)
        status, events, _, _ = chat(client, token, {"model": model.id, "content": "finish promptly"})
    assert status == 200
    assert events[0].event == "meta" and events[-1].event == "done"
    assert (
        "".join(d.data.get("content", "") for d in by_name(events, "delta"))
        == events[-1].data["message"]["content"]
    )


def _user(client: TestClient, email: str = "batch@example.com") -> str:
    admin = login(client, "admin@example.com", "initial-Admin-pass-9")
    r = client.post(
        "/api/auth/password",
        json={"current_password": "initial-Admin-pass-9", "new_password": "correct-horse-battery-staple"},
        headers=bearer(admin),
    )
    admin = r.json()["access_token"]
    r = client.post("/api/users", json={"email": email, "password": USER_PASSWORD}, headers=bearer(admin))
    assert r.status_code == 201, r.text
    return login(client, email, USER_PASSWORD)


def test_thinking_deltas_are_forwarded_separately(client, app, user_token, monkeypatch, fake_ollama) -> None:
    model = install_fake_model(monkeypatch, fake_ollama, "test-ollama/qwen3", upstream_model="qwen3:0.6b")
    body = {"model": model.id, "content": "think first", "options": {"think": True}}
    status, events, _, r = chat(client, user_token, body)
    assert status == 200, r.text
    deltas = by_name(events, "delta")
    thinking = "".join(d.data.get("thinking", "") for d in deltas)
    content = "".join(d.data.get("content", "") for d in deltas)
    assert thinking and content
    row = message_row(app, events[0].data["assistant_message_id"])
    assert row["content"] == content
    detail = client.get(
        f"/api/conversations/{events[0].data['conversation_id']}", headers=bearer(user_token)
    ).json()
    assert detail["messages"][-1]["thinking"] == thinking


def test_upstream_refusal_before_streaming_is_json(client, user_token, chat_model) -> None:
    # llama3.2 in the fake cannot think: Ollama's 400 comes back as JSON before any stream starts
    body = {"model": chat_model.id, "content": "think first", "options": {"think": True}}
    status, _, _, r = chat(client, user_token, body)
    assert status == 400, r.text
    assert set(r.json()) == {"code", "message", "detail"}


def test_continuing_a_conversation_sends_the_history(client, user_token, chat_model) -> None:
    captured: list[list[dict]] = []
    chat_model.fake.reply = lambda messages: captured.append(messages) or "answer"
    _, events, _, _ = chat(client, user_token, {"model": chat_model.id, "content": "first"})
    conv = events[0].data["conversation_id"]
    _, events2, _, _ = chat(
        client, user_token, {"model": chat_model.id, "content": "second", "conversation_id": conv}
    )
    assert events2[0].data["conversation_id"] == conv
    assert [(m["role"], m["content"]) for m in captured[-1]] == [
        ("user", "first"),
        ("assistant", "answer"),
        ("user", "second"),
    ]
    detail = client.get(f"/api/conversations/{conv}", headers=bearer(user_token)).json()
    assert len(detail["messages"]) == 4


# --- branches ----------------------------------------------------------------------------------------


def test_regenerate_and_edit_create_siblings(client, user_token, chat_model) -> None:
    _, events, _, _ = chat(client, user_token, {"model": chat_model.id, "content": "original question"})
    meta = events[0].data
    conv, user_id, first_reply = (
        meta["conversation_id"],
        meta["user_message_id"],
        meta["assistant_message_id"],
    )

    r = client.post(f"/api/chat/{first_reply}/regenerate", json={}, headers=bearer(user_token))
    assert r.status_code == 200
    regen, _ = parse_sse(r.text)
    assert regen[0].data["user_message_id"] == user_id
    second_reply = regen[0].data["assistant_message_id"]
    assert second_reply != first_reply and regen[-1].event == "done"

    # edit the first user message: same parent (none), new content -> a sibling user message
    _, edited, _, _ = chat(
        client,
        user_token,
        {"model": chat_model.id, "content": "edited question", "conversation_id": conv, "parent_id": None},
    )
    assert edited[0].data["conversation_id"] == conv
    detail = client.get(f"/api/conversations/{conv}", headers=bearer(user_token)).json()
    msgs = {m["id"]: m for m in detail["messages"]}
    assert msgs[first_reply]["parent_id"] == msgs[second_reply]["parent_id"] == user_id
    new_user = msgs[edited[0].data["user_message_id"]]
    assert new_user["parent_id"] is None and msgs[user_id]["parent_id"] is None
    assert len(detail["messages"]) == 5


def test_regenerate_can_switch_model_and_unknown_model_is_404(client, user_token, chat_model) -> None:
    _, events, _, _ = chat(client, user_token, {"model": chat_model.id, "content": "q"})
    reply = events[0].data["assistant_message_id"]
    r = client.post(f"/api/chat/{reply}/regenerate", json={"model": "nope/none"}, headers=bearer(user_token))
    assert r.status_code == 404 and r.json()["code"] == "model_not_found"
    r = client.post("/api/chat", json={"model": "nope/none", "content": "x"}, headers=bearer(user_token))
    assert r.status_code == 404 and r.json()["code"] == "model_not_found"


# --- input limits --------------------------------------------------------------------------------------


def test_too_long_message_is_422_and_nothing_is_stored(make_settings, monkeypatch, fake_ollama) -> None:
    app = create_app(make_settings(chat_max_message_chars=100, chat_title_generation=False))
    with TestClient(app, base_url=BASE_URL) as client:
        model = install_fake_model(monkeypatch, fake_ollama)
        token = _user(client)
        before = db_counts(app)
        r = client.post("/api/chat", json={"model": model.id, "content": "x" * 101}, headers=bearer(token))
        assert r.status_code == 422 and r.json()["code"] == "message_too_long"
        r = client.post("/api/chat", json={"model": model.id, "content": ""}, headers=bearer(token))
        assert r.status_code == 422
        r = client.post(
            "/api/chat", json={"model": model.id, "content": "hi", "admin": True}, headers=bearer(token)
        )
        assert r.status_code == 422
        assert db_counts(app) == before
        assert ("POST", "/api/chat") not in fake_ollama.requests


# --- upstream failures ---------------------------------------------------------------------------------


def test_busy_upstream_503_is_passed_on_with_retry_after(client, app, user_token, chat_model) -> None:
    chat_model.fake.busy = True
    status, _, _, r = chat(client, user_token, {"model": chat_model.id, "content": "are you there"})
    assert status == 503
    assert r.json()["code"] == "upstream_busy"
    assert int(r.headers["retry-after"]) >= 1
    ids = r.json()["detail"]
    assert message_row(app, ids["user_message_id"])["content"] == "are you there"
    failed = message_row(app, ids["assistant_message_id"])
    assert failed["status"] == "error" and failed["error"]["code"] == "upstream_busy"


def test_rate_limited_openai_429_is_passed_on_with_retry_after(client, app, user_token, monkeypatch) -> None:
    with FakeOpenAI(rate_limited=True, retry_after=7) as fake:
        model = install_fake_model(monkeypatch, fake, "test-openai/gpt", kind="openai")
        status, _, _, r = chat(client, user_token, {"model": model.id, "content": "hello"})
    assert status == 429
    assert r.json()["code"] == "upstream_rate_limited"
    assert r.headers["retry-after"] == "7"


def test_mid_stream_failure_sends_error_event_and_keeps_partial_text(
    client, app, user_token, chat_model
) -> None:
    chat_model.fake.fail_after_chunks = 5
    status, events, _, _ = chat(client, user_token, {"model": chat_model.id, "content": "break halfway"})
    assert status == 200
    assert events[-1].event == "error"
    assert events[-1].data["code"] == "upstream_error"
    partial = "".join(e.data.get("content", "") for e in by_name(events, "delta"))
    assert partial
    row = message_row(app, events[0].data["assistant_message_id"])
    assert row["status"] == "error" and row["content"] == partial
    assert row["error"]["code"] == "upstream_error"


def test_upstream_failures_leave_no_task_behind(client, app, user_token, chat_model) -> None:
    """docs/security.md, F2: the asyncio task count is steady after many replies that die mid-stream
    (no stream, persistence or title task left running for a failed reply)."""

    async def tasks() -> int:
        return len(asyncio.all_tasks())

    conversation = None
    chat_model.fake.fail_after_chunks = 3
    for i in range(3):  # warm-up: the app's lazily started helpers (HTTP pools, heartbeats) are running
        status, events, _, _ = chat(
            client,
            user_token,
            {"model": chat_model.id, "content": f"warm {i}", "conversation_id": conversation},
        )
        conversation = events[0].data["conversation_id"]
    assert wait_for(lambda: not chat_service.registry(app.state.runtime).all(), 5)
    baseline = client.portal.call(tasks)
    for i in range(20):
        status, events, _, _ = chat(
            client,
            user_token,
            {"model": chat_model.id, "content": f"again {i}", "conversation_id": conversation},
        )
        assert status == 200 and events[-1].event == "error"
    assert wait_for(lambda: client.portal.call(tasks) <= baseline, 5), (client.portal.call(tasks), baseline)


def test_first_token_timeout_becomes_an_error_event(make_settings, monkeypatch, fake_ollama) -> None:
    settings = make_settings(
        chat_first_token_timeout=0.4,
        chat_preflight_timeout=0.1,
        chat_ping_interval=0.05,
        chat_title_generation=False,
    )
    app = create_app(settings)
    with TestClient(app, base_url=BASE_URL) as client:
        model = install_fake_model(monkeypatch, fake_ollama)
        token = _user(client)
        fake_ollama.hang = True
        status, events, comments, _ = chat(client, token, {"model": model.id, "content": "anyone?"})
        fake_ollama.hang = False
    assert status == 200
    assert [e.event for e in events] == ["meta", "error"]
    assert events[-1].data["code"] == "upstream_timeout"
    assert "ping" in comments  # keep-alive comments while waiting
    row = message_row(app, events[0].data["assistant_message_id"])
    assert row["status"] == "error" and row["error"]["code"] == "upstream_timeout"
    assert wait_for(lambda: fake_ollama.active_streams == 0, timeout=2)


def test_idle_timeout_keeps_partial_answer(make_settings, monkeypatch, fake_ollama) -> None:
    settings = make_settings(chat_idle_timeout=0.3, chat_title_generation=False)
    app = create_app(settings)
    with TestClient(app, base_url=BASE_URL) as client:
        model = install_fake_model(monkeypatch, fake_ollama)
        token = _user(client)
        fake_ollama.token_delay = 1.0  # the first token comes at once, the next after 1 s > idle timeout
        status, events, _, _ = chat(client, token, {"model": model.id, "content": "slow"})
    assert status == 200 and events[-1].event == "error"
    assert events[-1].data["code"] == "upstream_timeout"
    row = message_row(app, events[0].data["assistant_message_id"])
    assert row["status"] == "error" and row["content"]


# --- stop and disconnect (real server: the TestClient cannot disconnect mid-stream) ---------------------


class SSEReader:
    """Reads one streamed response incrementally. Keeps a single iterator alive: an abandoned httpx
    iterator is closed when garbage-collected, which would close the connection (a disconnect)."""

    def __init__(self, response: httpx.Response) -> None:
        self._it = response.iter_text()
        self.raw = ""

    def until_delta(self) -> tuple[dict, str]:
        for chunk in self._it:
            self.raw += chunk
            events, _ = parse_sse(self.raw)
            metas, deltas = by_name(events, "meta"), by_name(events, "delta")
            if metas and deltas:
                return metas[0].data, "".join(d.data.get("content", "") for d in deltas)
        raise AssertionError("stream ended before the first delta")

    def rest(self) -> list:
        for chunk in self._it:
            self.raw += chunk
        return parse_sse(self.raw)[0]


def _read_until_delta(response: httpx.Response) -> tuple[dict, str, SSEReader]:
    reader = SSEReader(response)
    meta, seen = reader.until_delta()
    return meta, seen, reader


@pytest.fixture
def slow_live(make_settings, monkeypatch):
    settings = make_settings(chat_title_generation=False, chat_persist_interval=0.05)
    app = create_app(settings)
    with FakeOllama(token_delay=0.05) as fake:
        model = install_fake_model(monkeypatch, fake)
        with live_server(app) as live:
            token = _live_user(live.url)
            yield live, fake, model, token


def _live_user(url: str) -> str:
    with httpx.Client(base_url=url) as c:
        r = c.post("/api/auth/login", json={"email": "admin@example.com", "password": "initial-Admin-pass-9"})
        admin = r.json()["access_token"]
        r = c.post(
            "/api/auth/password",
            json={"current_password": "initial-Admin-pass-9", "new_password": "correct-horse-battery-staple"},
            headers=bearer(admin),
        )
        admin = r.json()["access_token"]
        c.post(
            "/api/users", json={"email": "live@example.com", "password": USER_PASSWORD}, headers=bearer(admin)
        )
        r = c.post("/api/auth/login", json={"email": "live@example.com", "password": USER_PASSWORD})
        return r.json()["access_token"]


def test_stop_endpoint_closes_upstream_and_keeps_partial(slow_live) -> None:
    live, fake, model, token = slow_live
    with httpx.Client(base_url=live.url, timeout=10) as c:
        with c.stream(
            "POST", "/api/chat", json={"model": model.id, "content": "long story"}, headers=bearer(token)
        ) as r:
            assert r.status_code == 200
            meta, _, reader = _read_until_delta(r)
            assert fake.active_streams == 1
            stopped_at = time.monotonic()
            s = c.post(f"/api/chat/{meta['assistant_message_id']}/stop", headers=bearer(token))
            assert s.status_code == 200, s.text
            assert s.json() == {"id": meta["assistant_message_id"], "status": "stopped", "stopped": True}
            events = reader.rest()
        assert wait_for(lambda: fake.active_streams == 0, timeout=1.0)
        assert time.monotonic() - stopped_at < 1.5
    assert events and events[-1].event == "done" and events[-1].data["message"]["status"] == "stopped"
    row = message_row(live.app, meta["assistant_message_id"])
    assert row["status"] == "stopped" and row["content"]
    full = 'You said: "long story". This answer comes from a fake server'
    assert full.startswith(row["content"]) or row["content"].startswith(full[:10])
    content = row["content"]
    assert wait_for(
        lambda: message_row(live.app, meta["assistant_message_id"])["content"] == content, timeout=0.3
    )


@pytest.mark.parametrize("revocation", ["sign-out", "password change", "account disabled"])
def test_revoking_the_sign_in_stops_its_streaming_reply(slow_live, revocation: str) -> None:
    """docs/security.md, B4: the reply of a sign-in that is revoked stops at its next save (the partial
    answer kept as ``stopped``), on whichever instance streams it (the check is in the database)."""
    live, fake, model, _ = slow_live
    with (
        httpx.Client(base_url=live.url, timeout=10) as tab,
        httpx.Client(base_url=live.url, timeout=10) as admin,
    ):
        r = tab.post("/api/auth/login", json={"email": "live@example.com", "password": USER_PASSWORD})
        token = r.json()["access_token"]
        r = admin.post(
            "/api/auth/login", json={"email": "admin@example.com", "password": "correct-horse-battery-staple"}
        )
        admin_token = r.json()["access_token"]
        with tab.stream(
            "POST", "/api/chat", json={"model": model.id, "content": "long story"}, headers=bearer(token)
        ) as r:
            assert r.status_code == 200
            meta, _, reader = _read_until_delta(r)
            if revocation == "sign-out":  # this tab's session (its refresh cookie)
                assert tab.post("/api/auth/logout", json={}).status_code == 204
            elif revocation == "password change":
                changed = tab.post(
                    "/api/auth/password",
                    json={"current_password": USER_PASSWORD, "new_password": "another-user-pass-Long-2"},
                    headers=bearer(token),
                )
                assert changed.status_code == 200, changed.text
            else:
                me = next(
                    u
                    for u in admin.get("/api/users", headers=bearer(admin_token)).json()["items"]
                    if u["email"] == "live@example.com"
                )
                off = admin.patch(
                    f"/api/users/{me['id']}", json={"is_active": False}, headers=bearer(admin_token)
                )
                assert off.status_code == 200, off.text
            events = reader.rest()  # the stream ends: it would run for minutes otherwise
    assert events[-1].event == "done" and events[-1].data["message"]["status"] == "stopped"
    assert wait_for(lambda: fake.active_streams == 0, timeout=2)
    row = message_row(live.app, meta["assistant_message_id"])
    assert row["status"] == "stopped" and row["content"]


def test_another_sessions_sign_out_leaves_the_reply_streaming(slow_live) -> None:
    live, fake, model, token = slow_live
    with (
        httpx.Client(base_url=live.url, timeout=10) as c,
        httpx.Client(base_url=live.url, timeout=10) as other,
    ):
        assert (
            other.post(
                "/api/auth/login", json={"email": "live@example.com", "password": USER_PASSWORD}
            ).status_code
            == 200
        )
        with c.stream(
            "POST", "/api/chat", json={"model": model.id, "content": "long story"}, headers=bearer(token)
        ) as r:
            meta, _, reader = _read_until_delta(r)
            assert other.post("/api/auth/logout", json={}).status_code == 204
            saved = message_row(live.app, meta["assistant_message_id"])["content"]
            # Several saves later (each one checks the sign-in), the reply is still streaming.
            assert wait_for(
                lambda: len(message_row(live.app, meta["assistant_message_id"])["content"]) > len(saved) + 40,
                10,
            )
            assert message_row(live.app, meta["assistant_message_id"])["status"] == "streaming"
            assert fake.active_streams == 1
            stopped = c.post(f"/api/chat/{meta['assistant_message_id']}/stop", headers=bearer(token))
            assert stopped.status_code == 200
            reader.rest()


def test_client_disconnect_closes_upstream_within_one_second(slow_live) -> None:
    live, fake, model, token = slow_live
    with httpx.Client(base_url=live.url, timeout=10) as c:
        with c.stream(
            "POST", "/api/chat", json={"model": model.id, "content": "tell me"}, headers=bearer(token)
        ) as r:
            meta, seen, _reader = _read_until_delta(r)
            assert fake.active_streams == 1
        closed_at = time.monotonic()  # leaving the block closes the connection
    assert wait_for(lambda: fake.active_streams == 0, timeout=1.0)
    assert time.monotonic() - closed_at < 1.0
    assert fake.disconnects >= 1
    assert wait_for(
        lambda: message_row(live.app, meta["assistant_message_id"])["status"] == "stopped", timeout=2
    )
    row = message_row(live.app, meta["assistant_message_id"])
    assert row["content"].startswith(seen)
    time_before = row["content"]
    # nothing is appended after the stop
    assert not wait_for(
        lambda: message_row(live.app, meta["assistant_message_id"])["content"] != time_before, 0.3
    )


def test_per_user_stream_cap_answers_429_before_calling_upstream(make_settings, monkeypatch) -> None:
    app = create_app(make_settings(max_streams_per_user=1, chat_title_generation=False))
    with FakeOllama(token_delay=0.05) as fake:
        model = install_fake_model(monkeypatch, fake)
        with live_server(app) as live:
            token = _live_user(live.url)
            with httpx.Client(base_url=live.url, timeout=10) as c:
                with c.stream(
                    "POST", "/api/chat", json={"model": model.id, "content": "one"}, headers=bearer(token)
                ) as r:
                    meta, _, _reader = _read_until_delta(r)
                    chats_before = fake.requests.count(("POST", "/api/chat"))
                    second = c.post(
                        "/api/chat", json={"model": model.id, "content": "two"}, headers=bearer(token)
                    )
                    assert second.status_code == 429
                    assert second.json()["code"] == "too_many_streams"
                    assert int(second.headers["retry-after"]) >= 1
                    assert fake.requests.count(("POST", "/api/chat")) == chats_before
                    c.post(f"/api/chat/{meta['assistant_message_id']}/stop", headers=bearer(token))
            assert wait_for(lambda: app.state.runtime.streams.count == 0, timeout=2)


def test_stop_of_unknown_or_finished_message(client, user_token, chat_model) -> None:
    r = client.post(f"/api/chat/{uuid.uuid4()}/stop", headers=bearer(user_token))
    assert r.status_code == 404
    _, events, _, _ = chat(client, user_token, {"model": chat_model.id, "content": "done already"})
    mid = events[0].data["assistant_message_id"]
    r = client.post(f"/api/chat/{mid}/stop", headers=bearer(user_token))
    assert r.status_code == 200 and r.json() == {"id": mid, "status": "complete", "stopped": False}


def test_active_stream_count_is_exposed(client, app, user_token, chat_model) -> None:
    streams = app.state.runtime.streams
    assert streams.count == 0
    chat(client, user_token, {"model": chat_model.id, "content": "hi"})
    assert streams.count == 0


# --- titles --------------------------------------------------------------------------------------------


def test_title_is_generated_after_first_exchange_and_never_overwrites_user_title(
    client, app, user_token, chat_model
) -> None:
    chat_model.fake.reply = lambda messages: (
        "Rivers of Europe" if messages[0]["role"] == "system" else "Long answer about rivers and more."
    )
    _, events, _, _ = chat(
        client,
        user_token,
        {"model": chat_model.id, "content": "Tell me about the big rivers of Europe please"},
    )
    conv = events[0].data["conversation_id"]

    def title() -> str:
        return client.get(f"/api/conversations/{conv}", headers=bearer(user_token)).json()["title"]

    assert wait_for(lambda: title() == "Rivers of Europe", timeout=5)
    r = client.patch(f"/api/conversations/{conv}", json={"title": "Mine"}, headers=bearer(user_token))
    assert r.json()["title_edited"] is True
    # a later conversation's title task must not touch this one; a re-run on this one is refused
    from server.services.conversations import set_generated_title

    with app.state.runtime.session_factory() as s:
        assert set_generated_title(s, uuid.UUID(conv), "Machine title") is False
        s.commit()
    assert title() == "Mine"


def test_title_failure_keeps_fallback_and_chat_succeeds(client, user_token, chat_model) -> None:
    calls = {"n": 0}

    def reply(messages):
        calls["n"] += 1
        return "fine" if messages[0]["role"] != "system" else ""

    chat_model.fake.reply = reply
    long_text = "Please explain how photosynthesis works in plants and algae, in detail"
    status, events, _, _ = chat(client, user_token, {"model": chat_model.id, "content": long_text})
    assert status == 200 and events[-1].event == "done"
    conv = events[0].data["conversation_id"]
    assert wait_for(lambda: calls["n"] >= 2, timeout=5)
    title = client.get(f"/api/conversations/{conv}", headers=bearer(user_token)).json()["title"]
    assert title.startswith("Please explain how photosynthesis") and len(title) <= 52


def test_a_new_conversation_gets_its_title_as_a_last_event_after_done(client, user_token, chat_model) -> None:
    chat_model.fake.reply = lambda messages: (
        "Rivers of Europe" if messages[0]["role"] == "system" else "Long answer about rivers and more."
    )
    body = {"model": chat_model.id, "content": "Tell me about big rivers"}
    _, events, _, _ = chat(client, user_token, body)
    names = [e.event for e in events]
    assert names[0] == "meta"
    assert names[-2:] == ["done", "title"]
    assert names.count("title") == 1
    conv = events[0].data["conversation_id"]
    assert events[-1].data == {"conversation_id": conv, "title": "Rivers of Europe"}
    # sent once stored: the conversation already reads with it
    stored = client.get(f"/api/conversations/{conv}", headers=bearer(user_token)).json()["title"]
    assert stored == events[-1].data["title"]
    # only the first exchange is titled: the next reply ends with done
    _, later, _, _ = chat(client, user_token, {**body, "content": "more", "conversation_id": conv})
    assert later[-1].event == "done"
    assert not by_name(later, "title")


def test_a_slow_title_ends_the_stream_after_the_title_timeout(make_settings, monkeypatch) -> None:
    settings = make_settings(chat_title_timeout=0.3, chat_ping_interval=0.05)
    app = create_app(settings)
    with FakeOllama() as fake, TestClient(app, base_url=BASE_URL) as client:
        model = install_fake_model(monkeypatch, fake)
        token = _user(client)

        def reply(messages) -> str:
            if messages[0]["role"] == "system":  # the title request: first word at once, then 1 s per word
                fake.token_delay = 1.0
                return "A title far too slow"
            return "the answer"

        fake.reply = reply
        started = time.monotonic()
        status, events, _, _ = chat(client, token, {"model": model.id, "content": "hello"})
        elapsed = time.monotonic() - started
        conv = events[0].data["conversation_id"]
        fallback = client.get(f"/api/conversations/{conv}", headers=bearer(token)).json()["title"]
    assert status == 200
    assert events[-1].event == "done"
    assert not by_name(events, "title")
    assert elapsed < 0.3 + chat_service.TITLE_SAVE_GRACE
    assert fallback == "hello"


def test_stream_payloads_validate_against_the_declared_schemas(client, user_token, chat_model) -> None:
    from server.schemas.chat_stream import ChatStreamEvent

    chat_model.fake.reply = lambda messages: (
        "A short title" if messages[0]["role"] == "system" else "An answer of many words, sent in pieces."
    )
    body = {"model": chat_model.id, "content": "first question"}
    _, first, _, _ = chat(client, user_token, body)
    conv = first[0].data["conversation_id"]
    _, continued, _, _ = chat(client, user_token, {**body, "content": "again", "conversation_id": conv})
    chat_model.fake.fail_after_chunks = 2
    _, failed, _, _ = chat(client, user_token, {**body, "content": "fail", "conversation_id": conv})
    chat_model.fake.fail_after_chunks = None
    events = first + continued + failed
    assert {e.event for e in events} == {"meta", "delta", "done", "error", "title"}
    for e in events:
        parsed = ChatStreamEvent.model_validate({"event": e.event, "data": e.data}).root
        assert parsed.event == e.event


def test_the_openapi_document_describes_the_stream_events(app) -> None:
    doc = app.openapi()
    for path in ("/api/chat", "/api/chat/{message_id}/regenerate"):
        stream = doc["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
        # one variant per event: its name, and its data lines as JSON of the payload (server/api/openapi.py)
        events = {v["properties"]["event"]["const"]: v["properties"]["data"] for v in stream["oneOf"]}
        assert set(events) == {"meta", "delta", "done", "error", "title"}
        assert events["meta"]["contentSchema"]["$ref"] == "#/components/schemas/ChatStreamMeta"
    # the parsed form {event, data}, which the web UI's types use
    mapping = doc["components"]["schemas"]["ChatStreamEvent"]["discriminator"]["mapping"]
    assert set(mapping) == {"meta", "delta", "done", "error", "title"}


# --- crash recovery ------------------------------------------------------------------------------------


def test_replies_left_streaming_by_a_crash_are_marked_interrupted(
    make_settings, client, user_token, chat_model, app
) -> None:
    _, events, _, _ = chat(client, user_token, {"model": chat_model.id, "content": "before the crash"})
    mid = uuid.UUID(events[0].data["assistant_message_id"])
    with app.state.runtime.session_factory() as s:  # simulate a kill -9 mid-stream, a minute ago
        msg = s.get(Message, mid)
        msg.status = "streaming"
        s.commit()
        s.execute(
            update(Message)
            .where(Message.id == mid)
            .values(
                updated_at=datetime.now(timezone.utc)
                - timedelta(seconds=chat_service.ORPHAN_AFTER_SECONDS + 15)
            )
        )
        s.commit()
    restarted = create_app(app.state.runtime.settings)
    with TestClient(restarted, base_url=BASE_URL):
        row = message_row(restarted, mid)
    assert row["status"] == "error" and row["error"]["code"] == "interrupted"
    assert row["content"]  # the partial text is kept


def test_a_live_reply_of_another_instance_is_not_taken_for_a_crash(
    make_settings, client, user_token, chat_model, app
) -> None:
    _, events, _, _ = chat(client, user_token, {"model": chat_model.id, "content": "streamed elsewhere"})
    mid = uuid.UUID(events[0].data["assistant_message_id"])
    runtime = app.state.runtime
    with runtime.session_factory() as s:  # a sibling instance is streaming this reply right now
        s.get(Message, mid).status = "streaming"
        s.commit()
    restarted = create_app(runtime.settings)  # another instance starting on the same database
    with TestClient(restarted, base_url=BASE_URL):
        assert message_row(restarted, mid)["status"] == "streaming"
    # The owner's heartbeat keeps it fresh; once the beats stop, the sweep marks it.
    before = message_row(app, mid)["updated_at"]
    chat_service._touch_streaming(runtime, [mid])
    assert message_row(app, mid)["updated_at"] != before
    later = datetime.now(timezone.utc) + timedelta(seconds=chat_service.ORPHAN_AFTER_SECONDS + 1)
    assert chat_service.recover_interrupted(runtime, live=[mid], now=later) == 0  # still ours: kept
    assert chat_service.recover_interrupted(runtime, now=later) == 1
    assert message_row(app, mid)["status"] == "error"


def _set_owner(app, mid: uuid.UUID, instance_id: str, incarnation_id: str) -> None:
    """The reply is ``streaming`` right now (fresh), streamed by ``instance_id`` / ``incarnation_id``."""
    with app.state.runtime.session_factory() as s:
        s.execute(
            update(Message)
            .where(Message.id == mid)
            .values(
                status="streaming",
                instance_id=instance_id,
                incarnation_id=incarnation_id,
                updated_at=datetime.now(timezone.utc),
            )
        )
        s.commit()


def test_a_reply_names_the_instance_and_incarnation_streaming_it(client, user_token, chat_model, app) -> None:
    _, events, _, _ = chat(client, user_token, {"model": chat_model.id, "content": "who streams this"})
    mid = uuid.UUID(events[0].data["assistant_message_id"])
    incarnation = app.state.runtime.streams.incarnation
    assert incarnation.claimed and incarnation.path(incarnation.id).exists()
    with app.state.runtime.session_factory() as s:
        row = s.get(Message, mid)
        assert (row.instance_id, row.incarnation_id) == (incarnation.instance_id, incarnation.id)
    assert incarnation.instance_id == reply_owner.instance_id(app.state.runtime.settings)


def test_own_replies_of_a_crashed_run_are_marked_interrupted_at_once(
    client, user_token, chat_model, app
) -> None:
    _, events, _, _ = chat(client, user_token, {"model": chat_model.id, "content": "before the kill -9"})
    mid = uuid.UUID(events[0].data["assistant_message_id"])
    settings = app.state.runtime.settings
    # Written a moment ago by a previous run of this instance, whose process is gone (no lock held).
    crashed = reply_owner.Incarnation(settings)
    assert crashed.claim()
    _set_owner(app, mid, crashed.instance_id, crashed.id)
    crashed.release()
    restarted = create_app(settings)
    with TestClient(restarted, base_url=BASE_URL):
        row = message_row(restarted, mid)  # right after the start: no staleness waited for
    assert row["status"] == "error" and row["error"]["code"] == "interrupted"
    assert row["content"]  # the partial text is kept


def test_a_live_process_of_the_same_instance_keeps_its_streaming_reply(
    client, user_token, chat_model, app
) -> None:
    _, events, _, _ = chat(client, user_token, {"model": chat_model.id, "content": "a sibling worker"})
    mid = uuid.UUID(events[0].data["assistant_message_id"])
    settings = app.state.runtime.settings
    sibling = reply_owner.Incarnation(settings)  # e.g. another gunicorn worker on this data directory
    assert sibling.claim()
    try:
        _set_owner(app, mid, sibling.instance_id, sibling.id)
        restarted = create_app(settings)
        with TestClient(restarted, base_url=BASE_URL):
            assert message_row(restarted, mid)["status"] == "streaming"
        # Another host or data directory with the same incarnation id: never this instance's to judge.
        _set_owner(app, mid, "another-host-or-data-dir", uuid.uuid4().hex)
        restarted = create_app(settings)
        with TestClient(restarted, base_url=BASE_URL):
            assert message_row(restarted, mid)["status"] == "streaming"
    finally:
        sibling.release()
    # Once the sibling is gone, the next start marks it at once.
    _set_owner(app, mid, sibling.instance_id, sibling.id)
    restarted = create_app(settings)
    with TestClient(restarted, base_url=BASE_URL):
        assert message_row(restarted, mid)["error"]["code"] == "interrupted"
