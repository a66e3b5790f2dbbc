"""Limits (services/limits.py): exact admission under real concurrency for every kind, on whatever database
the suite runs on (SQLite; PostgreSQL in the postgres stage), and across two real server processes sharing
that database; settlement after complete, stop, error and a crashed instance; renewal at the window
boundary with a controlled clock; key limits below the user's; the 429 shapes and the x-ratelimit-*
headers; the /api/.../limits contract."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.app import create_app
from server.services import limits as limits_service
from server.settings import Settings
from tests.fakes import FakeOllama
from tests.server.chat_support import install_fake_model, live_server, wait_for
from tests.server.conftest import bearer

MODEL = "llama3.2:latest"
#: 12:00:30 UTC on a mid-month day: 30 s to the minute's renewal, 11 h 59 min 30 s to the day's.
NOON = datetime(2026, 12, 15, 12, 0, 30, tzinfo=timezone.utc).timestamp()
MAX_TOKENS = 100
N = 3


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(reply="Hello from the fake.") as f:
        yield f


@pytest.fixture
def settings(make_settings: Callable[..., Settings], fake: FakeOllama) -> Settings:
    return make_settings(
        ollama_url=fake.url,
        models_discovery_timeout=2,
        chat_preflight_timeout=0.05,
        chat_title_generation=False,
    )


@pytest.fixture
def clock(app: FastAPI) -> Clock:
    c = Clock()
    app.state.runtime.clock = c
    return c


def me(client: TestClient | httpx.Client, token: str) -> str:
    return client.get("/api/users/me", headers=bearer(token)).json()["id"]


def put_user_limits(client: TestClient | httpx.Client, admin: str, uid: str, **values: int | None) -> dict:
    r = client.put(f"/api/users/{uid}/limits", json=values, headers=bearer(admin))
    assert r.status_code == 200, r.text
    return r.json()


def new_key(client: TestClient | httpx.Client, token: str) -> tuple[str, str]:
    r = client.post("/api/keys", json={"name": f"k-{uuid.uuid4().hex[:6]}"}, headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["id"]


def limit(
    client: TestClient | httpx.Client, token: str, kind: str, path: str = "/api/users/me/limits"
) -> dict:
    r = client.get(path, headers=bearer(token))
    assert r.status_code == 200, r.text
    return next(item for item in r.json()["limits"] if item["kind"] == kind)


def completion(stream: bool = False, content: str = "hi") -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": MAX_TOKENS,
        "stream": stream,
    }


def reserved_per_request(settings: Settings) -> int:
    return limits_service.estimate_tokens(len("hi"), MAX_TOKENS, settings)


#: For each kind: the user's overrides that make exactly N requests of a burst pass (reservation in tokens).
def overrides_for(kind: str, per_request: int) -> dict[str, int | None]:
    values: dict[str, int | None] = {"concurrent_streams": None}  # only the kind under test limits
    values[kind] = N * per_request if kind.startswith("tokens") else N
    return values


def burst(
    urls: str | list[str], key: str, count: int
) -> tuple[list[int], list[httpx.Response], list[httpx.Client]]:
    """``count`` streamed /v1 requests sent at once from as many threads (to the servers at ``urls`` in
    turn); the responses stay open (the fake holds the upstream answers), so nothing is settled during
    the burst."""
    targets = [urls] if isinstance(urls, str) else urls
    barrier = threading.Barrier(count)
    responses: list[httpx.Response] = []
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def one(url: str) -> None:
        client = httpx.Client(base_url=url, timeout=30)
        request = client.build_request(
            "POST", "/v1/chat/completions", json=completion(True), headers=bearer(key)
        )
        barrier.wait()
        response = client.send(request, stream=True)
        with lock:
            clients.append(client)
            responses.append(response)

    threads = [threading.Thread(target=one, args=(targets[i % len(targets)],)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return [r.status_code for r in responses], responses, clients


def close_all(responses: list[httpx.Response], clients: list[httpx.Client]) -> None:
    for r in responses:
        r.close()
    for c in clients:
        c.close()


# --- exactly N of 3N, every kind, one process --------------------------------------------------------------


@pytest.mark.parametrize("kind", limits_service.KINDS)
def test_exactly_n_of_3n_concurrent_requests_are_admitted(
    kind: str,
    app: FastAPI,
    settings: Settings,
    fake: FakeOllama,
    admin_token: str,
    user_token: str,
    clock: Clock,
) -> None:
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    uid = me(client, user_token)
    per_request = reserved_per_request(settings)
    put_user_limits(client, admin_token, uid, **overrides_for(kind, per_request))
    key, _ = new_key(client, user_token)
    fake.hang = True
    with live_server(app) as live:
        statuses, responses, clients = burst(live.url, key, 3 * N)
        try:
            assert sorted(statuses) == [200] * N + [429] * (2 * N), statuses
            refused = next(r for r in responses if r.status_code == 429)
            refused.read()
            code = refused.json()["error"]["code"]
            assert code == (
                "insufficient_quota"
                if kind in ("tokens_per_day", "tokens_per_month")
                else "rate_limit_exceeded"
            )
            assert int(refused.headers["retry-after"]) >= 1
            with httpx.Client(base_url=live.url) as c:
                item = limit(c, user_token, kind)
            expected = N * per_request if kind.startswith("tokens") else N
            assert item["used"] == expected and item["remaining"] == 0
        finally:
            fake.hang = False
            close_all(responses, clients)
        with httpx.Client(base_url=live.url) as c:
            assert wait_for(lambda: limit(c, user_token, "concurrent_streams")["used"] in (0, None), 10)


# --- settlement -------------------------------------------------------------------------------------------


def test_tokens_are_settled_with_the_real_count_when_the_reply_completes(
    client: TestClient, admin_token: str, user_token: str, clock: Clock
) -> None:
    put_user_limits(client, admin_token, me(client, user_token), tokens_per_day=100_000)
    key, _ = new_key(client, user_token)
    r = client.post("/v1/chat/completions", json=completion(), headers=bearer(key))
    assert r.status_code == 200, r.text
    assert limit(client, user_token, "tokens_per_day")["used"] == r.json()["usage"]["total_tokens"]
    assert limit(client, user_token, "concurrent_streams")["used"] == 0


def test_a_stopped_stream_gives_back_its_reservation_and_slot(
    app: FastAPI, settings: Settings, fake: FakeOllama, admin_token: str, user_token: str, clock: Clock
) -> None:
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    put_user_limits(
        client, admin_token, me(client, user_token), tokens_per_minute=10_000, concurrent_streams=1
    )
    key, _ = new_key(client, user_token)
    fake.hang = True
    with live_server(app) as live, httpx.Client(base_url=live.url, timeout=30) as c:
        try:
            with c.stream("POST", "/v1/chat/completions", json=completion(True), headers=bearer(key)) as r:
                assert r.status_code == 200
                assert limit(c, user_token, "tokens_per_minute")["used"] == reserved_per_request(settings)
                assert limit(c, user_token, "concurrent_streams")["used"] == 1
                second = c.post("/v1/chat/completions", json=completion(), headers=bearer(key))
                assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limit_exceeded"
        finally:
            fake.hang = False
        # the client went away: the stream stopped with nothing produced, so nothing is charged
        assert wait_for(lambda: limit(c, user_token, "concurrent_streams")["used"] == 0, 10)
        assert limit(c, user_token, "tokens_per_minute")["used"] == 0


def test_an_upstream_error_gives_back_the_reservation(
    client: TestClient, fake: FakeOllama, admin_token: str, user_token: str, clock: Clock
) -> None:
    put_user_limits(
        client, admin_token, me(client, user_token), tokens_per_minute=10_000, concurrent_streams=1
    )
    key, _ = new_key(client, user_token)
    fake.busy = True
    r = client.post("/v1/chat/completions", json=completion(), headers=bearer(key))
    assert r.status_code == 503, r.text
    assert r.headers["x-ratelimit-limit-tokens"] == "10000"  # error answers carry the headers too
    assert wait_for(lambda: limit(client, user_token, "concurrent_streams")["used"] == 0)
    assert limit(client, user_token, "tokens_per_minute")["used"] == 0
    fake.busy = False
    assert client.post("/v1/chat/completions", json=completion(), headers=bearer(key)).status_code == 200


def test_a_crashed_instances_reservation_expires_and_its_tokens_last_one_window(
    app: FastAPI, settings: Settings, client: TestClient, admin_token: str, user_token: str, clock: Clock
) -> None:
    uid = me(client, user_token)
    per_request = reserved_per_request(settings)
    put_user_limits(client, admin_token, uid, tokens_per_minute=per_request, concurrent_streams=1)
    key, _ = new_key(client, user_token)
    # Another instance on the same database admits a stream, then dies (kill -9): never settled, no heartbeat.
    other = create_app(settings)
    other.state.runtime.clock = Clock(NOON)
    limits_service.admit_now(
        other.state.runtime,
        user_id=uuid.UUID(uid),
        role="user",
        key_id=None,
        tokens=per_request,
        stream=True,
        door="api",
    )
    other.state.runtime.engine.dispose()
    refused = client.post("/v1/chat/completions", json=completion(), headers=bearer(key))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    # the slot frees when the reservation expires, the leaked tokens when the minute renews
    clock.now = NOON + settings.limits_reservation_seconds + 1  # 12:01:31: both
    assert limit(client, user_token, "concurrent_streams")["used"] == 0
    assert limit(client, user_token, "tokens_per_minute")["used"] == 0
    assert client.post("/v1/chat/completions", json=completion(), headers=bearer(key)).status_code == 200
    # the sweep deletes the expired row
    app.state.runtime.limits.beat()  # type: ignore[union-attr]
    with app.state.runtime.engine.connect() as conn:
        from server.db.models import LimitReservation

        assert conn.execute(LimitReservation.__table__.select()).first() is None


# --- windows, doors, keys, headers ------------------------------------------------------------------------


def test_renewal_at_the_window_boundary_and_the_v1_429(
    client: TestClient, admin_token: str, user_token: str, clock: Clock
) -> None:
    put_user_limits(
        client, admin_token, me(client, user_token), requests_per_minute=2, tokens_per_day=100_000
    )
    key, _ = new_key(client, user_token)
    for remaining in ("1", "0"):
        r = client.post("/v1/chat/completions", json=completion(), headers=bearer(key))
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "2"
        assert r.headers["x-ratelimit-remaining-requests"] == remaining
        assert r.headers["x-ratelimit-reset-requests"] == "30s"
        assert r.headers["x-ratelimit-limit-tokens"] == "100000"
        assert r.headers["x-ratelimit-reset-tokens"] == "11h59m30s"
        assert int(r.headers["x-ratelimit-remaining-tokens"]) < 100_000
    r = client.post("/v1/chat/completions", json=completion(), headers=bearer(key))
    assert r.status_code == 429
    assert r.headers["retry-after"] == "30"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    error = r.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert "2 requests per minute" in error["message"] and "2026-12-15T12:01:00Z" in error["message"]
    clock.now = NOON + 29.9  # still the same minute
    assert client.post("/v1/chat/completions", json=completion(), headers=bearer(key)).status_code == 429
    clock.now = NOON + 30  # 12:01:00, a new minute
    r = client.post("/v1/chat/completions", json=completion(), headers=bearer(key))
    assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "1"


def test_embeddings_count_as_requests_and_tokens(
    client: TestClient, admin_token: str, user_token: str, clock: Clock
) -> None:
    put_user_limits(client, admin_token, me(client, user_token), requests_per_minute=1, tokens_per_month=1000)
    key, _ = new_key(client, user_token)
    body = {"model": "nomic-embed-text:latest", "input": ["one", "two"]}
    r = client.post("/v1/embeddings", json=body, headers=bearer(key))
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert limit(client, user_token, "tokens_per_month")["used"] == r.json()["usage"]["total_tokens"]
    assert client.post("/v1/embeddings", json=body, headers=bearer(key)).status_code == 429


def test_one_budget_for_the_ui_chat_and_v1_and_the_api_429(
    client: TestClient,
    fake: FakeOllama,
    monkeypatch: pytest.MonkeyPatch,
    admin_token: str,
    user_token: str,
    clock: Clock,
) -> None:
    model = install_fake_model(monkeypatch, fake)
    put_user_limits(client, admin_token, me(client, user_token), requests_per_minute=2)
    key, _ = new_key(client, user_token)
    assert client.post(
        "/api/chat", json={"model": model.id, "content": "one"}, headers=bearer(user_token)
    ).is_success
    assert client.post("/v1/chat/completions", json=completion(), headers=bearer(key)).status_code == 200
    before = client.get("/api/conversations", headers=bearer(user_token)).json()
    r = client.post("/api/chat", json={"model": model.id, "content": "three"}, headers=bearer(user_token))
    assert r.status_code == 429
    assert r.headers["retry-after"] == "30"
    body = r.json()
    assert body["code"] == "rate_limited"
    assert (
        body["detail"]["limit"] == "requests_per_minute"
        and body["detail"]["resets_at"] == "2026-12-15T12:01:00Z"
    )
    # refused before anything was stored
    assert client.get("/api/conversations", headers=bearer(user_token)).json() == before


def test_the_day_quota_on_the_ui_chat(
    client: TestClient,
    fake: FakeOllama,
    monkeypatch: pytest.MonkeyPatch,
    admin_token: str,
    user_token: str,
    clock: Clock,
) -> None:
    model = install_fake_model(monkeypatch, fake)
    put_user_limits(client, admin_token, me(client, user_token), tokens_per_day=10)
    r = client.post("/api/chat", json={"model": model.id, "content": "hello"}, headers=bearer(user_token))
    assert r.status_code == 429 and r.json()["code"] == "quota_exceeded"
    assert r.headers["retry-after"] == str(12 * 3600 - 30)


def test_the_streams_default_is_max_streams_per_user(
    make_settings: Callable[..., Settings],
    fake: FakeOllama,
    create_user: Callable[..., str],
    client: TestClient,
) -> None:
    item = limit(client, create_user(), "concurrent_streams")
    assert (item["limit"], item["source"], item["used"]) == (4, "role", 0)
    app = create_app(make_settings(max_streams_per_user=2, limits_user_tokens_per_day=500))
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        token = c.post(
            "/api/auth/login", json={"email": "user@example.com", "password": "user-password-Long-1"}
        ).json()["access_token"]
        by_kind = {
            i["kind"]: i for i in c.get("/api/users/me/limits", headers=bearer(token)).json()["limits"]
        }
    assert by_kind["concurrent_streams"]["limit"] == 2
    assert (by_kind["tokens_per_day"]["limit"], by_kind["tokens_per_day"]["source"]) == (500, "role")
    assert by_kind["requests_per_minute"]["limit"] is None


def test_a_key_limited_below_its_user(
    client: TestClient, admin_token: str, user_token: str, clock: Clock
) -> None:
    put_user_limits(client, admin_token, me(client, user_token), requests_per_minute=5)
    key, key_id = new_key(client, user_token)
    other_key, _ = new_key(client, user_token)
    r = client.put(f"/api/keys/{key_id}/limits", json={"requests_per_minute": 1}, headers=bearer(user_token))
    assert r.status_code == 200, r.text
    item = next(i for i in r.json()["limits"] if i["kind"] == "requests_per_minute")
    assert (item["limit"], item["source"], item["key_limit"], item["user_limit"]) == (1, "key", 1, 5)
    assert client.post("/v1/chat/completions", json=completion(), headers=bearer(key)).status_code == 200
    refused = client.post("/v1/chat/completions", json=completion(), headers=bearer(key))
    assert refused.status_code == 429 and "API key" in refused.json()["error"]["message"]
    # the user's other key still has the user's budget (one of 5 used)
    ok = client.post("/v1/chat/completions", json=completion(), headers=bearer(other_key))
    assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining-requests"] == "3"
    # a key limit above the user's is stored, the user's applies
    r = client.put(f"/api/keys/{key_id}/limits", json={"requests_per_minute": 50}, headers=bearer(user_token))
    item = next(i for i in r.json()["limits"] if i["kind"] == "requests_per_minute")
    assert (item["limit"], item["source"], item["key_limit"]) == (5, "user", 50)


# --- the contract -----------------------------------------------------------------------------------------


def test_limits_contract_validation_and_permissions(
    client: TestClient, admin_token: str, user_token: str, create_user: Callable[..., str], clock: Clock
) -> None:
    uid = me(client, user_token)
    body = put_user_limits(client, admin_token, uid, tokens_per_day=1000, requests_per_minute=10)
    by_kind = {i["kind"]: i for i in body["limits"]}
    assert by_kind["tokens_per_day"] == {
        "kind": "tokens_per_day",
        "limit": 1000,
        "source": "user",
        "user_limit": 1000,
        "key_limit": None,
        "used": 0,
        "remaining": 1000,
        "resets_at": "2026-12-16T00:00:00Z",
    }
    assert by_kind["tokens_per_month"]["resets_at"] == "2027-01-01T00:00:00Z"
    # absent = unchanged, null = unlimited (over the role default)
    body = put_user_limits(client, admin_token, uid, requests_per_minute=None, concurrent_streams=None)
    by_kind = {i["kind"]: i for i in body["limits"]}
    assert by_kind["tokens_per_day"]["limit"] == 1000
    assert by_kind["requests_per_minute"]["limit"] is None and by_kind["requests_per_minute"]["used"] is None
    assert (by_kind["concurrent_streams"]["limit"], by_kind["concurrent_streams"]["source"]) == (None, "user")
    assert client.get(f"/api/users/{uid}/limits", headers=bearer(admin_token)).json() == body
    for bad in (
        {"tokens_per_day": 0},
        {"tokens_per_day": "many"},
        {"per_hour": 3},
        {"concurrent_streams": -1},
    ):
        r = client.put(f"/api/users/{uid}/limits", json=bad, headers=bearer(admin_token))
        assert r.status_code == 422 and {"code", "message"} <= set(r.json()), r.text
    # users may not set their own limits nor read others'; keys are their owner's (or an admin's)
    assert client.put(f"/api/users/{uid}/limits", json={}, headers=bearer(user_token)).status_code == 403
    assert client.get(f"/api/users/{uid}/limits", headers=bearer(user_token)).status_code == 403
    _, key_id = new_key(client, user_token)
    stranger = create_user("stranger@example.com")
    r = client.put(f"/api/keys/{key_id}/limits", json={"tokens_per_day": 5}, headers=bearer(stranger))
    assert r.status_code == 404
    assert client.get(f"/api/keys/{key_id}/limits", headers=bearer(stranger)).status_code == 404
    r = client.put(f"/api/keys/{key_id}/limits", json={"tokens_per_day": 5}, headers=bearer(admin_token))
    assert r.status_code == 200 and r.json()["key_id"] == key_id
    assert (
        client.put(f"/api/users/{uuid.uuid4()}/limits", json={}, headers=bearer(admin_token)).status_code
        == 404
    )


def test_a_user_limit_goes_back_to_the_role_default_and_every_change_is_audited(
    client: TestClient, admin_token: str, user_token: str, settings: Settings, clock: Clock
) -> None:
    uid = me(client, user_token)
    default = limit(client, user_token, "concurrent_streams")
    assert default["source"] == "role"
    put_user_limits(client, admin_token, uid, concurrent_streams=None, tokens_per_day=50)
    assert (limit(client, user_token, "concurrent_streams")["limit"], "user") == (None, "user")
    r = client.delete(f"/api/users/{uid}/limits/concurrent_streams", headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    back = next(i for i in r.json()["limits"] if i["kind"] == "concurrent_streams")
    assert (back["limit"], back["source"]) == (default["limit"], "role")
    assert limit(client, user_token, "tokens_per_day")["limit"] == 50  # the other kinds keep theirs
    r = client.delete(f"/api/users/{uid}/limits/per_hour", headers=bearer(admin_token))
    assert r.status_code == 422 and {"code", "message"} <= set(r.json())
    assert (
        client.delete(f"/api/users/{uid}/limits/tokens_per_day", headers=bearer(user_token)).status_code
        == 403
    )
    _, key_id = new_key(client, user_token)
    r = client.put(f"/api/keys/{key_id}/limits", json={"requests_per_minute": 7}, headers=bearer(user_token))
    assert r.status_code == 200, r.text
    put_user_limits(client, admin_token, uid, tokens_per_day=50)  # no change: no entry

    r = client.get("/api/audit", params={"action": "limits.changed"}, headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    entries = [(e["target"]["kind"], e["details"]["changes"]) for e in reversed(r.json()["items"])]
    assert entries == [
        (
            "user",
            {
                "concurrent_streams": {"from": "default", "to": None},
                "tokens_per_day": {"from": "default", "to": 50},
            },
        ),
        ("user", {"concurrent_streams": {"from": None, "to": "default"}}),
        ("api_key", {"requests_per_minute": {"from": "default", "to": 7}}),
    ]


# --- two real server processes on one database (SQLite here, PostgreSQL in the postgres stage) ------------


def test_two_server_processes_admit_exactly_n_of_3n_and_a_killed_ones_slots_expire(
    tmp_path: Path, fake: FakeOllama
) -> None:
    from tests.deploy.support import sign_in_admin, start_serve
    from tests.server.conftest import USER_PASSWORD, database_url

    url = database_url(tmp_path)
    env = {
        "MODELTRAIN_OLLAMA_URL": fake.url,
        "MODELTRAIN_CHAT_PREFLIGHT_TIMEOUT": "0.05",
        "MODELTRAIN_MODELS_DISCOVERY_TIMEOUT": "2",
    }
    a = start_serve(tmp_path / "a", url, tmp_path / "a.log", **env)
    procs = [a]
    try:
        b = start_serve(tmp_path / "b", url, tmp_path / "b.log", **env)
        procs.append(b)
        with httpx.Client(base_url=a.url, timeout=30) as c:
            admin = sign_in_admin(c)
            keys: dict[str, tuple[str, str]] = {}
            per_request = limits_service.estimate_tokens(len("hi"), MAX_TOKENS, Settings(_env_file=None))
            for kind in limits_service.KINDS:
                email = f"{kind.replace('_', '-')}@example.com"
                r = c.post(
                    "/api/users", json={"email": email, "password": USER_PASSWORD}, headers=bearer(admin)
                )
                assert r.status_code == 201, r.text
                put_user_limits(c, admin, r.json()["id"], **overrides_for(kind, per_request))
                token = c.post("/api/auth/login", json={"email": email, "password": USER_PASSWORD}).json()
                keys[kind] = (new_key(c, token["access_token"])[0], r.json()["id"])
        fake.hang = True
        for kind in limits_service.KINDS:
            # Not across a minute's end: the per-minute windows would renew during the burst.
            assert wait_for(lambda: time.time() % 60 < 50, 15)
            responses: list[httpx.Response] = []
            clients: list[httpx.Client] = []
            try:
                _, responses, clients = burst([a.url, b.url], keys[kind][0], 3 * N)
                admitted = [r for r in responses if r.status_code == 200]
                assert len(admitted) == N, (kind, [r.status_code for r in responses])
                assert all(r.status_code == 429 for r in responses if r.status_code != 200)
                if kind == "concurrent_streams":
                    _kill_and_expire(a, admitted, url, uuid.UUID(keys[kind][1]))
            finally:
                close_all(responses, clients)
        fake.hang = False
    finally:
        fake.hang = False
        for proc in procs:
            proc.stop()


def _kill_and_expire(a, admitted: list[httpx.Response], url: str, user_id: uuid.UUID) -> None:
    """kill -9 the process ``a``: its reservations are never settled, the others' are; they hold their
    slots until they expire (checked with a clock past their expiry: no waiting)."""
    from sqlalchemy import create_engine, func, select

    from server.db.models import LimitReservation

    on_a = sum(1 for r in admitted if str(r.url).startswith(a.url))
    a.popen.kill()
    a.popen.wait(10)
    for r in admitted:
        if not str(r.url).startswith(a.url):
            r.close()
    engine = create_engine(url)
    t = LimitReservation.__table__.c

    def live(at: float) -> int:
        with engine.connect() as conn:
            query = select(func.count()).where(t.user_id == user_id, t.expires_at > int(at))
            return int(conn.execute(query).scalar_one())

    try:
        assert wait_for(lambda: live(time.time()) == on_a, 10)
        ttl = Settings(_env_file=None).limits_reservation_seconds
        assert live(time.time() + ttl + 1) == 0  # expired: the slots are free again
    finally:
        engine.dispose()
