"""Pulls through ``/api/ollama/pull``: progress streams, re-attaching, cancelling, several at once, the
free-disk check and stall reports — against the fake Ollama server."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from server.db.session import SQLITE_BUSY_TIMEOUT_MS
from server.services.ollama_pulls import PullManager
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.server.conftest import bearer
from tests.server.ollama_support import PULL, pull_state, pulls, read_until_final, sse_events
from tests.server.services.test_ollama_daemon import wait_until


@pytest.fixture
def settings(ollama_settings: Settings) -> Settings:
    return ollama_settings


def test_pull_streams_progress_then_done(
    client: TestClient, admin_token: str, disk: dict, settings: Settings
) -> None:
    h = bearer(admin_token)
    with client.stream("POST", "/api/ollama/pull", json={"name": PULL}, headers=h) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = read_until_final(r)
    kinds = [e for e, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"progress"}
    progress = [d for e, d in events if e == "progress"]
    assert set(progress[0]) == {
        "name",
        "status",
        "digest",
        "total",
        "completed",
        "percent",
        "bytes_per_s",
        "eta_s",
        "stalled",
    }
    layer = [d for d in progress if d["digest"] and d["total"] and d["total"] > 1 << 20]
    assert layer[-1]["percent"] == 100.0 and layer[-1]["completed"] == layer[-1]["total"]
    assert any(d["bytes_per_s"] for d in layer)
    assert any(d["eta_s"] is not None for d in layer)
    statuses = [d["status"] for d in progress]
    assert statuses[0] == "pulling manifest"  # the client that started the pull sees every event
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    assert events[-1][1]["name"] == PULL
    assert disk["asked"] == [settings.ollama_models_dir]
    names = [m["name"] for m in client.get("/api/ollama/models", headers=h).json()["items"]]
    assert "tinyllama:latest" in names
    assert pull_state(client, admin_token, PULL) == "success"


def test_pull_continues_after_disconnect_and_reattaches(
    client: TestClient, admin_token: str, disk: dict, fake: FakeOllama
) -> None:
    h = bearer(admin_token)
    fake.pull_tick = 0.1
    with client.stream("POST", "/api/ollama/pull", json={"name": PULL}, headers=h) as r:
        seen = []
        for _, data in sse_events(r):
            seen.append(data)
            if data.get("completed"):
                break
    # The browser went away; the pull did not.
    assert pull_state(client, admin_token, PULL) == "running"
    # Starting the same pull again joins it rather than starting a second download.
    with client.stream("GET", f"/api/ollama/pulls/{PULL}/events", headers=h) as r:
        assert r.status_code == 200
        events = read_until_final(r)
    first = events[0][1]
    assert events[0][0] == "progress"
    assert (first["completed"] or 0) >= seen[-1]["completed"] or first["digest"] != seen[-1]["digest"]
    assert events[-1][0] == "done"
    assert [m for m, p in fake.requests if p == "/api/pull"] == ["POST"]
    # A finished pull can still be re-attached to: it answers its final event at once.
    with client.stream("GET", f"/api/ollama/pulls/{PULL}/events", headers=h) as r:
        assert read_until_final(r)[-1][0] == "done"


def test_cancel_a_pull(client: TestClient, admin_token: str, disk: dict, fake: FakeOllama) -> None:
    h = bearer(admin_token)
    fake.pull_tick = 0.2
    with client.stream("POST", "/api/ollama/pull", json={"name": "smollm2:135m"}, headers=h) as r:
        for _, data in sse_events(r):
            if data.get("digest"):
                break
    assert pull_state(client, admin_token, "smollm2:135m") == "running"
    r = client.delete("/api/ollama/pull/smollm2:135m", headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "cancelled"
    assert r.json()["error"]["code"] == "cancelled"
    # The cancel waited for the pull's end, its audit entry included.
    entries = client.get("/api/audit", params={"action": "model.pulled"}, headers=h).json()["items"]
    assert [(e["target"]["name"], e["outcome"], e["details"]["state"]) for e in entries] == [
        ("smollm2:135m", "failure", "cancelled")
    ]
    assert wait_until(lambda: fake.active_streams == 0, 5)
    assert fake.disconnects >= 1
    with client.stream("GET", "/api/ollama/pulls/smollm2:135m/events", headers=h) as r:
        assert read_until_final(r) == [
            ("error", {"name": "smollm2:135m", "code": "cancelled", "message": "the pull was cancelled"})
        ]
    names = [m["name"] for m in client.get("/api/ollama/models", headers=h).json()["items"]]
    assert "smollm2:135m" not in names
    assert client.delete("/api/ollama/pull/smollm2:135m", headers=h).status_code == 404


def test_a_cancel_does_not_hold_the_write_lock_while_it_waits(
    client: TestClient, admin_token: str, disk: dict, fake: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pull's end writes its audit entry; a cancel that waited for it under the request's transaction
    (on SQLite, the write lock) stalled both, and every other writer, for the full wait (10 s)."""
    h = bearer(admin_token)
    fake.pull_tick = 0.2
    factory = client.app.state.runtime.session_factory
    writable_while_waiting: list[bool] = []
    original = PullManager.cancel

    def cancel(self: PullManager, url: str, name: str, timeout: float = 10.0) -> dict:
        with factory() as s:
            if s.get_bind().dialect.name == "sqlite":
                s.execute(text("PRAGMA busy_timeout = 200"))
            try:
                s.execute(text("UPDATE users SET updated_at = updated_at WHERE 1 = 0"))
                s.commit()
                writable_while_waiting.append(True)
            except OperationalError:  # database is locked
                writable_while_waiting.append(False)
            finally:
                if s.get_bind().dialect.name == "sqlite":  # the connection goes back to the pool
                    s.execute(text(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"))
        return original(self, url, name, timeout)

    monkeypatch.setattr(PullManager, "cancel", cancel)
    with client.stream("POST", "/api/ollama/pull", json={"name": "smollm2:135m"}, headers=h) as r:
        for _, data in sse_events(r):
            if data.get("digest"):
                break
    r = client.delete("/api/ollama/pull/smollm2:135m", headers=h)
    assert r.status_code == 200, r.text
    assert writable_while_waiting == [True]


def test_several_pulls_at_once(client: TestClient, admin_token: str, disk: dict, fake: FakeOllama) -> None:
    h = bearer(admin_token)
    fake.pull_tick = 0.1
    streams = [
        client.stream("POST", "/api/ollama/pull", json={"name": n}, headers=h) for n in (PULL, "smollm2:135m")
    ]
    responses = [s.__enter__() for s in streams]
    try:
        assert all(r.status_code == 200 for r in responses)
        assert {p["name"] for p in pulls(client, admin_token) if p["state"] == "running"} == {
            PULL,
            "smollm2:135m",
        }
        finals = [read_until_final(r)[-1][0] for r in responses]
    finally:
        for s in streams:
            s.__exit__(None, None, None)
    assert finals == ["done", "done"]


def test_pull_refused_when_disk_is_full(
    client: TestClient, admin_token: str, disk: dict, fake: FakeOllama
) -> None:
    disk["free"] = 1000
    r = client.post("/api/ollama/pull", json={"name": PULL}, headers=bearer(admin_token))
    assert r.status_code == 507
    body = r.json()
    assert body["code"] == "disk_full"
    assert body["detail"]["free_bytes"] == 1000
    assert body["detail"]["needed_bytes"] > 600_000_000
    assert wait_until(lambda: fake.active_streams == 0, 5)  # the download was abandoned
    names = [m["name"] for m in client.get("/api/ollama/models", headers=bearer(admin_token)).json()["items"]]
    assert "tinyllama:latest" not in names
    assert pull_state(client, admin_token, PULL) == "error"


def test_stalled_pull_is_reported(client: TestClient, admin_token: str, disk: dict, fake: FakeOllama) -> None:
    h = bearer(admin_token)
    fake.pull_tick = 0.6  # settings: stalled after 0.15 s without progress
    flags = []
    with client.stream("POST", "/api/ollama/pull", json={"name": PULL}, headers=h) as r:
        for _, data in sse_events(r):
            flags.append(data["stalled"])
            if True in flags and flags[-1] is False:
                break
    assert True in flags and flags[-1] is False  # reported stalled, then progress resumed
    stalled_listed = client.get("/api/ollama/pulls", headers=h).json()["items"][0]
    assert stalled_listed["state"] == "running"
    assert client.delete(f"/api/ollama/pull/{PULL}", headers=h).status_code == 200


def test_pull_of_unknown_model_is_an_error(client: TestClient, admin_token: str, disk: dict) -> None:
    r = client.post("/api/ollama/pull", json={"name": "no-such-model:1b"}, headers=bearer(admin_token))
    assert r.status_code == 404
    assert r.json()["code"] == "model_not_found"
