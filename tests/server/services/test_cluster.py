"""Two app instances sharing one database (services/cluster.py): a pull cancelled and re-attached to
through the instance that does not run it, and the wake-up channel (LISTEN/NOTIFY on PostgreSQL, polling
on SQLite). Runs on SQLite, and on PostgreSQL with MODELTRAIN_TEST_POSTGRES=1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from server.app import create_app
from server.db.models import PullCancel
from server.db.session import session_scope
from server.services.cluster_signals import Signals, conninfo, notify
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.server.conftest import BASE_URL, bearer
from tests.server.ollama_support import PULL, read_until_final, sse_events
from tests.server.services.test_ollama_daemon import wait_until

PROGRESS_FIELDS = {
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


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(pull_tick=0.08) as server:  # a pull takes about a second
        yield server


@pytest.fixture
def instance_settings(make_settings: Callable[..., Settings], fake: FakeOllama, tmp_path: Path):
    (tmp_path / "models").mkdir(exist_ok=True)

    def make(name: str) -> Settings:
        return make_settings(
            data_dir=tmp_path / f"data-{name}",
            instance_name=name,
            stop_poll_seconds=0.05,
            ollama_url=fake.url,
            ollama_models_dir=tmp_path / "models",
            ollama_disk_reserve_bytes=0,
        )

    return make


@pytest.fixture
def settings(instance_settings: Callable[[str], Settings]) -> Settings:
    return instance_settings("a")


@pytest.fixture
def other(client: TestClient, instance_settings: Callable[[str], Settings]) -> Iterator[TestClient]:
    """Instance "b" on the database of ``client`` (instance "a"), started after it."""
    with TestClient(create_app(instance_settings("b")), base_url=BASE_URL) as c:
        yield c


def _listed(client: TestClient, token: str, state: str = "running") -> dict | None:
    items = client.get("/api/ollama/pulls", headers=bearer(token)).json()["items"]
    return next((p for p in items if p["name"] == PULL and p["state"] == state), None)


def test_a_pull_is_cancelled_through_the_instance_that_does_not_run_it(
    client: TestClient, other: TestClient, admin_token: str
) -> None:
    h = bearer(admin_token)
    with client.stream("POST", "/api/ollama/pull", json={"name": PULL}, headers=h) as r:
        assert r.status_code == 200 and r.headers["x-modeltrain-instance"] == "a"
        events = sse_events(r)
        assert next(events)[0] == "progress"
        assert wait_until(lambda: _listed(other, admin_token) is not None, 5)
        assert _listed(other, admin_token)["instance"] == "a"
        started = time.monotonic()
        cancel = other.delete(f"/api/ollama/pull/{PULL}", headers=h)
        took = time.monotonic() - started
        assert cancel.status_code == 200, cancel.text
        assert cancel.headers["x-modeltrain-instance"] == "b"
        assert cancel.json()["state"] == "cancelled" and cancel.json()["instance"] == "a"
        final = next(e for e in events if e[0] in ("done", "error"))
    assert final[1]["code"] == "cancelled"
    assert took < 3  # the whole pull would take about a second more; the cancel is not a timeout
    runtime = client.app.state.runtime
    with session_scope(runtime.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(PullCancel)) == 0  # claimed and deleted
    # Nothing runs anywhere now: both instances answer 404.
    for c in (client, other):
        again = c.delete(f"/api/ollama/pull/{PULL}", headers=h)
        assert again.status_code == 404 and again.json()["code"] == "pull_not_found"


def test_reattaching_on_the_other_instance_streams_progress_to_done(
    client: TestClient, other: TestClient, admin_token: str
) -> None:
    h = bearer(admin_token)
    assert other.get(f"/api/ollama/pulls/{PULL}/events", headers=h).status_code == 404  # nobody pulls
    with client.stream("POST", "/api/ollama/pull", json={"name": PULL}, headers=h) as r:
        on_a = sse_events(r)
        assert next(on_a)[0] == "progress"
        assert wait_until(lambda: _listed(other, admin_token) is not None, 5)
        with other.stream("GET", f"/api/ollama/pulls/{PULL}/events", headers=h) as remote:
            assert remote.status_code == 200 and remote.headers["x-modeltrain-instance"] == "b"
            events = read_until_final(remote)
        assert next(e for e in on_a if e[0] in ("done", "error"))[0] == "done"
    kinds = [e for e, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"progress"} and len(kinds) >= 2
    assert all(set(d) == PROGRESS_FIELDS for e, d in events if e == "progress")
    completed = [d["completed"] for e, d in events if e == "progress" and d["completed"] is not None]
    assert completed == sorted(completed) or len({d["digest"] for e, d in events if e == "progress"}) > 1
    assert events[-1][1]["name"] == PULL and events[-1][1]["status"] == "success"
    assert isinstance(events[-1][1]["elapsed_s"], float)


def test_signals_wake_waiters_and_fall_back_to_the_interval() -> None:
    async def scenario() -> None:
        signals = Signals(None)  # SQLite: nothing to listen on
        signals.start()
        started = time.monotonic()
        assert await signals.wait(0.05) == 0  # no notification: the interval
        assert time.monotonic() - started >= 0.04
        waiter = asyncio.ensure_future(signals.wait(30))
        await asyncio.sleep(0)
        signals.wake()
        assert await asyncio.wait_for(waiter, 5) == 1
        # A notification that came while the caller was busy is not lost.
        signals.wake()
        assert await asyncio.wait_for(signals.wait(30, seen=1), 1) == 2
        await signals.stop()

    asyncio.run(scenario())


def test_a_cancellation_that_meets_a_notification_still_cancels() -> None:
    """Shutdown cancels the watcher while a NOTIFY sets the event in the same tick: the wait must end in
    CancelledError (asyncio.wait_for on 3.11 returned normally there, and the watcher never stopped)."""

    async def scenario() -> str:
        signals = Signals(None)
        signals.start()
        waiter = asyncio.ensure_future(signals.wait(30))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        signals.wake()
        waiter.cancel()
        try:
            await waiter
        except asyncio.CancelledError:
            return "cancelled"
        finally:
            await signals.stop()
        return "swallowed"

    assert asyncio.run(scenario()) == "cancelled"


def test_stopping_never_hangs_on_the_driver(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """A connect that never ends, even when cancelled (a driver that misses the cancellation): shutdown
    still goes on, after a bounded wait, and says so."""
    import psycopg

    from server.services import cluster_signals

    entered = asyncio.Event()

    async def stuck(*args: object, **kwargs: object) -> None:
        entered.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue  # swallowed

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", stuck)
    monkeypatch.setattr(cluster_signals, "STOP_TIMEOUT_SECONDS", 0.2)

    async def scenario() -> asyncio.Task[None] | None:
        signals = Signals("postgresql://nobody@127.0.0.1:9/none")
        signals.start()
        task = signals._task
        await asyncio.wait_for(entered.wait(), 5)
        await asyncio.wait_for(signals.stop(), 5)  # returns: the listener is left behind
        return task

    loop = asyncio.new_event_loop()
    try:
        task = loop.run_until_complete(scenario())
        assert task is not None and not task.done()
        assert "did not stop in time" in caplog.text
        task.cancel()  # let this test's loop close cleanly
    finally:
        loop.close()


def test_a_notify_reaches_the_listening_instance_at_once_on_postgresql(
    client: TestClient, other: TestClient
) -> None:
    runtime_a, runtime_b = client.app.state.runtime, other.app.state.runtime
    signals = runtime_b.cluster.signals
    if conninfo(runtime_a.engine) is None:  # SQLite: no channel, the watchers poll
        assert not signals.listening
        return
    assert wait_until(lambda: signals.listening, 10)
    before = signals.generation
    with session_scope(runtime_a.session_factory) as session:
        notify(session, "test")
    assert wait_until(lambda: signals.generation > before, 5)


def test_metrics_and_alerts_on_either_instance_show_both(
    client: TestClient, other: TestClient, admin_token: str
) -> None:
    h = bearer(admin_token)
    # An alert only instance "b" has: "a" shows it, labelled, among the active ones.
    other.app.state.runtime.alerts.raise_alert(
        "test:b", level="warning", metric="cpu", value=97.0, message="hot"
    )

    def names(c: TestClient) -> list[str]:
        return [i["instance"] for i in c.get("/api/metrics", headers=h).json()["instances"]]

    # The snapshots are published at each watcher's first tick and then every few seconds.
    assert wait_until(lambda: names(client) == ["a", "b"] and names(other) == ["b", "a"], 20)
    body = client.get("/api/metrics", headers=h).json()
    assert body["instance"] == "a" and {"current", "status", "thresholds", "history"} <= set(body)
    assert all(i["host"] and "cpu_percent" in i["current"] and i["status"] for i in body["instances"])

    def alert_on_a() -> dict | None:
        feed = client.get("/api/alerts", headers=h).json()
        return next((a for a in feed["active"] if a["key"] == "test:b"), None)

    assert wait_until(lambda: alert_on_a() is not None, 20)
    assert alert_on_a()["instance"] == "b" and alert_on_a()["message"] == "hot"
    feed = client.get("/api/alerts", headers=h).json()
    assert feed["instance"] == "a" and feed["instances"] == ["a", "b"]
    assert all(a["instance"] == "a" for a in feed["recent"])  # the answering instance's own history
    logs = client.get("/api/logs", headers=h).json()
    assert logs["instance"] == "a" and logs["host"]


def test_a_stopped_instance_leaves_the_system_page(
    client: TestClient, instance_settings: Callable[[str], Settings], admin_token: str
) -> None:
    h = bearer(admin_token)

    def names() -> list[str]:
        return [i["instance"] for i in client.get("/api/metrics", headers=h).json()["instances"]]

    with TestClient(create_app(instance_settings("c")), base_url=BASE_URL):
        assert wait_until(lambda: names() == ["a", "c"], 20)
    assert names() == ["a"]  # withdrawn at shutdown, not left to go stale
