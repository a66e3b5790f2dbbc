"""Usage accounting (services/usage.py, GET /api/usage, /api/usage.csv, the Prometheus counters): batched
writes, the UI chat's records, rollups, pruning and who sees what."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from server.db.models import UsageRecord, UsageRollup, User
from server.providers import ollama as ollama_provider
from server.providers.base import Done
from server.services import usage as usage_service
from server.services.usage import UsageEvent, UsageRecorder
from tests.server.chat_support import parse_sse, wait_for
from tests.server.conftest import bearer


def _user_id(app: FastAPI, email: str) -> uuid.UUID:
    with app.state.runtime.session_factory() as s:
        return s.scalars(select(User.id).where(User.email == email)).one()


def _raw(app: FastAPI) -> list[UsageRecord]:
    with app.state.runtime.session_factory() as s:
        return list(s.scalars(select(UsageRecord).order_by(UsageRecord.created_at)))


def _rollups(app: FastAPI) -> list[UsageRollup]:
    with app.state.runtime.session_factory() as s:
        return list(s.scalars(select(UsageRollup)))


class StatementCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, conn, cursor, statement: str, parameters, context, executemany) -> None:
        self.statements.append(statement.lstrip().split(None, 1)[0].upper())


@contextmanager
def count_statements(app: FastAPI) -> Iterator[StatementCounter]:
    engine = app.state.runtime.engine
    counter = StatementCounter()
    event.listen(engine, "before_cursor_execute", counter)
    begins: list[int] = []
    event.listen(engine, "begin", lambda conn: begins.append(1))
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", counter)
    counter.begins = len(begins)  # type: ignore[attr-defined]


def _event(user_id: uuid.UUID, **kw) -> UsageEvent:
    base = {
        "user_id": user_id,
        "model": "m1",
        "outcome": "complete",
        "prompt_tokens": 3,
        "completion_tokens": 5,
    }
    return UsageEvent(**{**base, **kw})


# --- the recorder --------------------------------------------------------------------------------------


def test_stopping_ends_the_writer_even_when_a_batch_wakes_it_at_that_moment(app: FastAPI) -> None:
    """A full batch wakes the writer in the same tick as shutdown cancels it: it must end (asyncio.wait_for
    on 3.11 swallowed such a cancellation, and shutdown hung)."""
    import asyncio

    async def scenario() -> bool:
        rec = UsageRecorder(app.state.runtime)
        rec.start()
        task = rec._task
        assert task is not None and rec._wake is not None
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        rec._wake.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        return task in done and task.cancelled()

    assert asyncio.run(scenario())


def test_record_touches_no_database_and_a_flush_is_one_transaction(client, app, admin_token) -> None:
    uid = _first_user(app)
    rec = UsageRecorder(app.state.runtime)  # not started: flushed by hand
    with count_statements(app) as counter:
        for i in range(50):
            rec.record(_event(uid, model=f"m{i % 2}"))
    assert counter.statements == []  # nothing on the request path
    assert rec.pending == 50
    with count_statements(app) as counter:
        assert rec.flush_now() == 50
    assert rec.flushes == 1
    assert counter.begins == 1  # type: ignore[attr-defined]
    assert counter.statements.count("INSERT") == 2  # raw rows (executemany) + the rollup upsert
    assert rec.pending == 0 and rec.flush_now() == 0 and rec.flushes == 1
    assert len(_raw(app)) == 50


def _first_user(app: FastAPI) -> uuid.UUID:
    with app.state.runtime.session_factory() as s:
        return s.scalars(select(User.id)).first()


def test_missing_counts_are_estimated_and_marked(client, app, admin_token) -> None:
    uid = _first_user(app)
    rec = UsageRecorder(app.state.runtime)
    rec.record(_event(uid, prompt_tokens=None, completion_tokens=None, prompt_chars=41, completion_chars=8))
    rec.record(_event(uid, prompt_tokens=7, completion_tokens=9, prompt_chars=1000))
    rec.flush_now()
    estimated, counted = sorted(_raw(app), key=lambda r: not r.estimated)
    assert (estimated.estimated, estimated.prompt_tokens, estimated.completion_tokens) == (True, 11, 2)
    assert (counted.estimated, counted.prompt_tokens, counted.completion_tokens) == (False, 7, 9)


def test_rollups_match_the_raw_records(client, app, admin_token) -> None:
    uid, other, key = _first_user(app), uuid.uuid4(), uuid.uuid4()
    rec = UsageRecorder(app.state.runtime)
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    events = [
        _event(uid, model="a", prompt_tokens=1, completion_tokens=2),
        _event(uid, model="a", prompt_tokens=10, completion_tokens=20, outcome="error", error_code="x"),
        _event(uid, model="b", prompt_tokens=4, completion_tokens=4, outcome="stopped"),
        _event(uid, model="a", key_id=key, prompt_tokens=5, completion_tokens=5),
        _event(other, model="a", prompt_tokens=100, completion_tokens=1, created_at=yesterday),
    ]
    for e in events[:3]:
        rec.record(e)
    rec.flush_now()
    for e in events[3:]:  # a second flush adds to the same rollup rows
        rec.record(e)
    rec.record(_event(uid, model="a", prompt_tokens=1, completion_tokens=1))
    rec.flush_now()
    raw = _raw(app)
    totals: dict[tuple, list[int]] = {}
    for r in raw:
        k = (r.created_at.date(), r.user_id, r.key_id or usage_service.NO_KEY, r.model)
        t = totals.setdefault(k, [0, 0, 0, 0, 0])
        t[0] += 1
        t[1] += r.prompt_tokens
        t[2] += r.completion_tokens
        t[3] += r.outcome == "error"
        t[4] += r.outcome == "stopped"
    rolled = {
        (r.day, r.user_id, r.key_id, r.model): [
            r.requests,
            r.prompt_tokens,
            r.completion_tokens,
            r.errors,
            r.stopped,
        ]
        for r in _rollups(app)
    }
    assert rolled == totals
    assert rolled[(datetime.now(timezone.utc).date(), uid, usage_service.NO_KEY, "a")] == [3, 12, 23, 1, 0]


def test_pruning_deletes_old_raw_rows_and_keeps_rollups(client, app, admin_token) -> None:
    runtime = app.state.runtime
    uid = _first_user(app)
    now = datetime.now(timezone.utc)
    rec = UsageRecorder(runtime)
    raw_days, rollup_days = runtime.settings.usage_raw_days, runtime.settings.usage_rollup_days
    rec.record(_event(uid, model="old", created_at=now - timedelta(days=raw_days + 1)))
    rec.record(_event(uid, model="ancient", created_at=now - timedelta(days=rollup_days + 2)))
    rec.record(_event(uid, model="new", created_at=now - timedelta(days=raw_days - 1)))
    rec.flush_now()
    assert usage_service.prune(runtime, now) == (2, 1)
    assert [r.model for r in _raw(app)] == ["new"]
    assert sorted(r.model for r in _rollups(app)) == ["new", "old"]  # the old day's rollup stays
    assert usage_service.prune(runtime, now) == (0, 0)  # idempotent: a second instance deletes nothing


def test_pruning_works_in_batches(client, app, admin_token, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage_service, "PRUNE_BATCH", 3)
    runtime = app.state.runtime
    uid = _first_user(app)
    old = datetime.now(timezone.utc) - timedelta(days=runtime.settings.usage_raw_days + 5)
    rec = UsageRecorder(runtime)
    for i in range(7):
        rec.record(_event(uid, created_at=old + timedelta(seconds=i)))
    rec.flush_now()
    with count_statements(app) as counter:
        assert usage_service.prune(runtime)[0] == 7
    assert counter.statements.count("DELETE") == 3  # 3 + 3 + 1
    with runtime.session_factory() as s:
        assert s.scalar(select(func.count()).select_from(UsageRecord)) == 0


def test_a_failed_flush_keeps_the_events(client, app, admin_token, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = UsageRecorder(app.state.runtime)
    rec.record(_event(_first_user(app)))

    def broken(runtime, rows):
        raise RuntimeError("database away")

    monkeypatch.setattr(usage_service, "write_batch", broken)
    with pytest.raises(RuntimeError):
        rec.flush_now()
    assert rec.pending == 1
    monkeypatch.undo()
    assert rec.flush_now() == 1


# --- the UI chat -----------------------------------------------------------------------------------------


def _chat(client: TestClient, token: str, model: str, content: str = "Tell me about rivers") -> list:
    r = client.post("/api/chat", json={"model": model, "content": content}, headers=bearer(token))
    assert r.status_code == 200, r.text
    events, _ = parse_sse(r.text)
    return events


def test_ui_chat_records_the_upstreams_counts(client, app, user_token, chat_model) -> None:
    events = _chat(client, user_token, chat_model.id)
    done = next(e for e in events if e.event == "done")
    usage = done.data["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert wait_for(lambda: len(_raw(app)) == 1)
    (row,) = _raw(app)
    assert row.user_id == _user_id(app, "user@example.com")
    assert row.model == chat_model.id and row.key_id is None
    assert (row.prompt_tokens, row.completion_tokens, row.estimated) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        False,
    )
    assert row.outcome == "complete" and row.error_code is None
    assert row.client_ip == "testclient"
    assert row.duration_ms >= 0 and row.ttft_ms is not None
    assert app.state.runtime.usage.flushes >= 1


def test_ui_chat_without_counts_is_estimated(
    client, app, user_token, chat_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ollama_provider.done_event
    monkeypatch.setattr(
        ollama_provider, "done_event", lambda line: Done(done_reason=real(line).done_reason, usage={})
    )
    chat_model.fake.reply = "twelve chars"
    _chat(client, user_token, chat_model.id, content="x" * 40)
    assert wait_for(lambda: len(_raw(app)) == 1)
    (row,) = _raw(app)
    assert row.estimated is True
    assert row.completion_tokens == 3  # 12 characters / 4
    assert row.prompt_tokens >= 10


def test_ui_chat_error_is_recorded_with_its_code(client, app, user_token, chat_model) -> None:
    chat_model.fake.fail_after_chunks = 2
    _chat(client, user_token, chat_model.id)
    assert wait_for(lambda: len(_raw(app)) == 1)
    (row,) = _raw(app)
    assert row.outcome == "error" and row.error_code


# --- the API -------------------------------------------------------------------------------------------


@pytest.fixture
def seeded(client, app, admin_token, create_user):
    """Two users with usage: alice (model a, one with a key) and bob (model b)."""
    alice = create_user("alice@example.com")
    bob = create_user("bob@example.com")
    a_id, b_id = _user_id(app, "alice@example.com"), _user_id(app, "bob@example.com")
    key = uuid.uuid4()
    rec = UsageRecorder(app.state.runtime)
    rec.record(_event(a_id, model="a", prompt_tokens=1, completion_tokens=2))
    rec.record(_event(a_id, model="a", key_id=key, prompt_tokens=3, completion_tokens=4))
    rec.record(_event(b_id, model="b", prompt_tokens=10, completion_tokens=20, client_ip="=cmd()"))
    rec.flush_now()
    return {"alice": alice, "bob": bob, "admin": admin_token, "a_id": a_id, "b_id": b_id, "key": key}


def _get(client: TestClient, token: str, **params) -> dict:
    r = client.get("/api/usage", params=params, headers=bearer(token))
    assert r.status_code == 200, r.text
    return r.json()


def test_users_see_only_their_own_usage(client, seeded) -> None:
    body = _get(client, seeded["alice"])
    items = body["items"]
    assert {i["user_id"] for i in items} == {str(seeded["a_id"])}
    assert {(i["key_id"], i["prompt_tokens"]) for i in items if i["day"]} == {
        (None, 1),
        (str(seeded["key"]), 3),
    }
    raw = _get(client, seeded["alice"], granularity="raw")["items"]
    assert len(raw) == 2 and all(i["created_at"] for i in raw)
    assert {i["model"] for i in raw} == {"a"}
    # asking for someone else's usage is refused; a key filter stays inside their own rows
    r = client.get("/api/usage", params={"user_id": str(seeded["b_id"])}, headers=bearer(seeded["alice"]))
    assert r.status_code == 403 and r.json()["code"] == "usage_forbidden"
    assert _get(client, seeded["bob"], key_id=str(seeded["key"]))["items"] == []


def test_admins_see_everyone_and_filter(client, seeded) -> None:
    admin = seeded["admin"]
    everyone = _get(client, admin)
    assert {i["user_id"] for i in everyone["items"]} == {str(seeded["a_id"]), str(seeded["b_id"])}
    assert {u["email"] for u in everyone["users"]} == {"alice@example.com", "bob@example.com"}
    only_b = _get(client, admin, user_id=str(seeded["b_id"]))["items"]
    assert [(i["model"], i["prompt_tokens"], i["completion_tokens"]) for i in only_b] == [("b", 10, 20)]
    by_key = _get(client, admin, key_id=str(seeded["key"]), granularity="raw")["items"]
    assert [i["prompt_tokens"] for i in by_key] == [3]
    by_model = _get(client, admin, model="a")["items"]
    assert sum(i["requests"] for i in by_model) == 2
    today = datetime.now(timezone.utc).date()
    past = _get(
        client, admin, **{"from": str(today - timedelta(days=9)), "to": str(today - timedelta(days=1))}
    )
    assert past["items"] == []
    r = client.get(
        "/api/usage", params={"from": str(today), "to": str(today - timedelta(days=1))}, headers=bearer(admin)
    )
    assert r.status_code == 422 and r.json()["code"] == "usage_range_invalid"


def test_usage_needs_a_sign_in(client) -> None:
    assert client.get("/api/usage").status_code == 401
    assert client.get("/api/usage.csv").status_code == 401


def test_csv_export(client, seeded) -> None:
    r = client.get("/api/usage.csv", params={"granularity": "raw"}, headers=bearer(seeded["admin"]))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3
    assert {row["model"] for row in rows} == {"a", "b"}
    bob = next(row for row in rows if row["model"] == "b")
    assert (bob["prompt_tokens"], bob["completion_tokens"]) == ("10", "20")
    assert bob["client_ip"] == "'=cmd()"  # never read as a spreadsheet formula
    own = client.get("/api/usage.csv", headers=bearer(seeded["alice"]))
    day_rows = list(csv.DictReader(io.StringIO(own.text)))
    assert {row["user_id"] for row in day_rows} == {str(seeded["a_id"])}
    assert sum(int(row["requests"]) for row in day_rows) == 2


def test_prometheus_counters_by_model_and_outcome(client, app, admin_token) -> None:
    rec = usage_service.recorder(app.state.runtime)
    uid = _first_user(app)
    rec.record(_event(uid, model='we"ird', prompt_tokens=3, completion_tokens=5))
    rec.record(_event(uid, model='we"ird', prompt_tokens=1, completion_tokens=1))
    rec.record(_event(uid, model="m2", outcome="error", prompt_tokens=2, completion_tokens=0))
    r = client.get("/metrics", headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    text = r.text
    assert "# TYPE modeltrain_usage_requests_total counter" in text
    assert 'modeltrain_usage_requests_total{model="we\\"ird",outcome="complete"} 2' in text
    assert 'modeltrain_usage_requests_total{model="m2",outcome="error"} 1' in text
    assert 'modeltrain_usage_tokens_total{model="we\\"ird",outcome="complete",type="prompt"} 4' in text
    assert 'modeltrain_usage_tokens_total{model="we\\"ird",outcome="complete",type="completion"} 6' in text
