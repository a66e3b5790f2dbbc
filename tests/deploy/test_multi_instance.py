"""Two `modeltrain serve` instances behind nginx, sharing one PostgreSQL, behave as one server.

Sign-in/refresh across instances, login throttling counted across them, a stream stopped through the
other instance, a pull started on one listed, cancelled and followed (re-attached) through the other,
the scheduled backup run once, per-instance metrics that can be told apart and summed, and the System
page (metrics, alerts) of either instance listing both.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.deploy.support import (
    ADMIN_EMAIL,
    Nginx,
    Proc,
    first_model_id,
    iter_sse,
    json_headers,
    make_dist,
    sign_in_admin,
    start_nginx,
    start_serve,
    wait_for,
)
from tests.fakes.fake_ollama import FakeOllama

LONG_REPLY = " ".join(f"token{i}" for i in range(400))
#: In the fake registry, not installed: ~10 ticks of 0.15 s to pull.
SLOW_PULL = "smollm2:135m"


class Topology:
    def __init__(self, a: Proc, b: Proc, nginx: Nginx, fake: FakeOllama, db_url: str, backups: Path) -> None:
        self.a, self.b, self.nginx, self.fake, self.db_url, self.backups = a, b, nginx, fake, db_url, backups

    def sql(self, query: str) -> list[tuple]:
        engine = create_engine(self.db_url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(query))]
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def topo(pg_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    tmp = tmp_path_factory.mktemp("multi")
    db_url = pg_cluster.new_database("multi")
    backups = tmp / "backups"
    dist = make_dist(Path(tempfile.mkdtemp(prefix="modeltrain-dist-")))
    with FakeOllama(token_delay=0.02, reply=LONG_REPLY, pull_tick=0.15) as fake:
        common = {
            "MODELTRAIN_TRUSTED_PROXIES": "127.0.0.1",
            "MODELTRAIN_OLLAMA_URL": fake.url,
            "MODELTRAIN_BACKUP_DIR": str(backups),
            # A slot earlier today that no instance has run yet: due at the first check of each.
            "MODELTRAIN_BACKUP_SCHEDULE": "00:00",
            "MODELTRAIN_BACKUP_CHECK_SECONDS": "0.2",
            "MODELTRAIN_OLLAMA_DISK_RESERVE_BYTES": "0",
            "MODELTRAIN_STOP_POLL_SECONDS": "0.1",
        }
        a = start_serve(tmp / "a", db_url, tmp / "a.log", MODELTRAIN_INSTANCE_NAME="a", **common)
        b = None
        nginx = None
        try:
            b = start_serve(tmp / "b", db_url, tmp / "b.log", MODELTRAIN_INSTANCE_NAME="b", **common)
            nginx = start_nginx([a.url.removeprefix("http://"), b.url.removeprefix("http://")], dist)
            yield Topology(a, b, nginx, fake, db_url, backups)
        finally:
            if nginx is not None:
                nginx.stop()
            for proc in (b, a):
                if proc is not None:
                    proc.stop()
            shutil.rmtree(dist.parent, ignore_errors=True)
            pg_cluster.drop_database(db_url)


def test_sign_in_on_one_refresh_on_the_other(topo: Topology) -> None:
    with httpx.Client(base_url=topo.a.url) as on_a, httpx.Client(base_url=topo.b.url) as on_b:
        token = sign_in_admin(on_a)
        assert on_b.get("/api/users/me", headers=json_headers(token=token)).json()["email"] == ADMIN_EMAIL
        first = on_a.cookies.jar
        cookie = next(c for c in first if c.path.startswith("/api/auth"))
        on_b.cookies.set(cookie.name, cookie.value, domain=cookie.domain, path=cookie.path)
        r = on_b.post("/api/auth/refresh", headers=json_headers())
        assert r.status_code == 200, r.text
        fresh = r.json()["access_token"]
        assert on_a.get("/api/users/me", headers=json_headers(token=fresh)).status_code == 200
        # Replaying the refresh token B already rotated, on A, from another client (the same browser
        # within a few seconds is the grace window of two tabs): reuse detected across instances.
        replay = on_a.post("/api/auth/refresh", headers={**json_headers(), "User-Agent": "replayer/1.0"})
        assert replay.status_code == 401
        assert (
            on_b.get("/api/users/me", headers=json_headers(token=fresh)).status_code == 401
        )  # family revoked


def test_login_throttling_counts_across_instances(topo: Topology) -> None:
    email = "throttled@example.com"
    with httpx.Client(base_url=topo.a.url) as admin_client:
        admin = sign_in_admin(admin_client)
        r = admin_client.post(
            "/api/users",
            json={"email": email, "password": "throttle-user-pass-1", "role": "user"},
            headers=json_headers(token=admin),
        )
        assert r.status_code == 201, r.text
    # The failures come from 127.0.0.9; the right password then comes from 127.0.0.10 on both instances:
    # refused, because the account's failures were counted across both.
    source = httpx.HTTPTransport(local_address="127.0.0.9")
    with (
        httpx.Client(base_url=topo.a.url, transport=source) as on_a,
        httpx.Client(base_url=topo.b.url, transport=httpx.HTTPTransport(local_address="127.0.0.9")) as on_b,
    ):
        statuses = []
        for i in range(5):  # login_max_failures = 5, alternating instances
            client = on_a if i % 2 == 0 else on_b
            statuses.append(
                client.post(
                    "/api/auth/login",
                    json={"email": email, "password": "wrong-password-x"},
                    headers=json_headers(),
                ).status_code
            )
        assert statuses == [401] * 5
    for url in (topo.a.url, topo.b.url):
        with httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.10")) as other:
            r = other.post(
                "/api/auth/login",
                json={"email": email, "password": "throttle-user-pass-1"},
                headers=json_headers(),
            )
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_stop_reaches_the_instance_that_streams(topo: Topology) -> None:
    with httpx.Client(base_url=topo.a.url, timeout=30) as on_a, httpx.Client(base_url=topo.b.url) as on_b:
        token = sign_in_admin(on_a)
        model = first_model_id(on_a, token)
        outcome: dict = {}
        with on_a.stream(
            "POST",
            "/api/chat",
            json={"model": model, "content": "a long answer please"},
            headers=json_headers(token=token),
        ) as r:
            assert r.status_code == 200
            events = iter_sse(r)
            name, meta = next(events)
            assert name == "meta"
            message_id = meta["assistant_message_id"]
            assert next(e for e in events if e[0] == "delta")
            started = time.monotonic()
            stop = on_b.post(f"/api/chat/{message_id}/stop", headers=json_headers(token=token))
            assert stop.status_code == 200, stop.text
            assert stop.json() == {"id": message_id, "status": "stopped", "stopped": True}
            for name, data in events:
                if name in ("done", "error"):
                    outcome = {"event": name, "data": data}
                    break
            stopped_after = time.monotonic() - started
        assert outcome["event"] == "done" and outcome["data"]["message"]["status"] == "stopped"
        kept = outcome["data"]["message"]["content"]
        assert kept and LONG_REPLY.startswith(kept) and kept != LONG_REPLY  # partial answer kept
        assert stopped_after < 5  # the whole reply would take 400 x 20 ms
        assert topo.sql("SELECT count(*) FROM stream_stops") == [(0,)]
        # Stopping a finished reply through either instance changes nothing.
        again = on_b.post(f"/api/chat/{message_id}/stop", headers=json_headers(token=token))
        assert again.json() == {"id": message_id, "status": "stopped", "stopped": False}


def test_a_pull_started_on_one_is_listed_on_the_other(topo: Topology) -> None:
    with httpx.Client(base_url=topo.a.url, timeout=60) as on_a, httpx.Client(base_url=topo.b.url) as on_b:
        token = sign_in_admin(on_a)
        seen_on_b: list[dict] = []

        def listed_on_b() -> bool:
            items = on_b.get("/api/ollama/pulls", headers=json_headers(token=token)).json()["items"]
            seen_on_b[:] = [p for p in items if p["name"] == "tinyllama:latest"]
            return bool(seen_on_b)

        with on_a.stream(
            "POST", "/api/ollama/pull", json={"name": "tinyllama:latest"}, headers=json_headers(token=token)
        ) as r:
            assert r.status_code == 200, r.read()
            events = iter_sse(r)
            assert next(events)[0] == "progress"
            wait_for(listed_on_b, 10)
            assert seen_on_b[0]["state"] == "running"
            final = next(e for e in events if e[0] in ("done", "error"))
        assert final[0] == "done"
        # The finished pull shows up as finished on B too, then the model is there for both.
        wait_for(lambda: listed_on_b() and seen_on_b[0]["state"] == "success", 10)
        names = [
            m["name"]
            for m in on_b.get("/api/ollama/models", headers=json_headers(token=token)).json()["items"]
        ]
        assert "tinyllama:latest" in names


def _pull_on_b(on_b: httpx.Client, token: str, name: str, state: str = "running") -> dict | None:
    items = on_b.get("/api/ollama/pulls", headers=json_headers(token=token)).json()["items"]
    return next((p for p in items if p["name"] == name and p["state"] == state), None)


def test_a_pull_started_on_one_is_cancelled_through_the_other(topo: Topology) -> None:
    with httpx.Client(base_url=topo.a.url, timeout=60) as on_a, httpx.Client(base_url=topo.b.url) as on_b:
        token = sign_in_admin(on_a)
        with on_a.stream(
            "POST", "/api/ollama/pull", json={"name": SLOW_PULL}, headers=json_headers(token=token)
        ) as r:
            assert r.status_code == 200, r.read()
            events = iter_sse(r)
            assert next(events)[0] == "progress"
            assert wait_for(lambda: _pull_on_b(on_b, token, SLOW_PULL), 10)["instance"] == "a"
            cancel = on_b.delete(f"/api/ollama/pull/{SLOW_PULL}", headers=json_headers(token=token))
            assert cancel.status_code == 200, cancel.text
            assert cancel.headers["x-modeltrain-instance"] == "b"
            assert cancel.json()["state"] == "cancelled" and cancel.json()["instance"] == "a"
            final = next(e for e in events if e[0] in ("done", "error"))
        assert final[0] == "error" and final[1]["code"] == "cancelled"
        assert topo.sql("SELECT count(*) FROM pull_cancels") == [(0,)]
        gone = on_b.delete(f"/api/ollama/pull/{SLOW_PULL}", headers=json_headers(token=token))
        assert gone.status_code == 404 and gone.json()["code"] == "pull_not_found"


def test_reattaching_on_the_other_instance_follows_the_pull_to_done(topo: Topology) -> None:
    with (
        httpx.Client(base_url=topo.a.url, timeout=60) as on_a,
        httpx.Client(base_url=topo.b.url, timeout=60) as on_b,
    ):
        token = sign_in_admin(on_a)
        with on_a.stream(
            "POST", "/api/ollama/pull", json={"name": SLOW_PULL}, headers=json_headers(token=token)
        ) as r:
            assert r.status_code == 200, r.read()
            on_a_events = iter_sse(r)
            assert next(on_a_events)[0] == "progress"
            wait_for(lambda: _pull_on_b(on_b, token, SLOW_PULL), 10)
            with on_b.stream(
                "GET", f"/api/ollama/pulls/{SLOW_PULL}/events", headers=json_headers(token=token)
            ) as remote:
                assert remote.status_code == 200 and remote.headers["x-modeltrain-instance"] == "b"
                seen = []
                for event in iter_sse(remote):
                    seen.append(event)
                    if event[0] in ("done", "error"):
                        break
            assert next(e for e in on_a_events if e[0] in ("done", "error"))[0] == "done"
        assert seen[-1][0] == "done" and seen[-1][1]["status"] == "success"
        progress = [d for e, d in seen if e == "progress"]
        assert len(progress) >= 2  # several snapshots while it ran, not just the end
        assert all(d["name"] == SLOW_PULL for d in progress)


def test_scheduled_backup_runs_once(topo: Topology) -> None:
    rows = wait_for(
        lambda: (r := topo.sql("SELECT slot, state, holder FROM backup_leases")) and r[0][1] == "done" and r,
        30,
    )
    assert len(rows) == 1
    backups = sorted(topo.backups.glob("*.tar.gz"))
    assert len(backups) == 1, backups
    # Both instances keep checking every 0.2 s; the slot stays taken (checked for a bounded while).
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert len(list(topo.backups.glob("*.tar.gz"))) == 1
        time.sleep(0.1)


def _requests_total(metrics: str) -> tuple[str, float]:
    instance = re.search(r'modeltrain_instance_info\{modeltrain_instance="([^"]+)"', metrics)
    assert instance, metrics[-500:]
    total = sum(
        float(v)
        for v in re.findall(
            r'^modeltrain_http_requests_total\{code="\w+"\} ([\d.e+]+)$', metrics, re.MULTILINE
        )
    )
    return instance.group(1), total


def test_metrics_per_instance_can_be_aggregated(topo: Topology) -> None:
    with httpx.Client(base_url=topo.nginx.url) as through:
        token = sign_in_admin(through, topo.nginx.url)

        def scrape() -> dict[str, float]:
            out = {}
            for proc in (topo.a, topo.b):
                r = httpx.get(f"{proc.url}/metrics", headers=json_headers(token=token))
                assert r.status_code == 200
                name, total = _requests_total(r.text)
                out[name] = total
            return out

        before = scrape()
        assert set(before) == {"a", "b"}
        for _ in range(20):  # round robin through nginx: both instances serve
            assert through.get("/api/users/me", headers=json_headers(token=token)).status_code == 200
        after = scrape()
        # Each scrape is itself a request on each instance (counted after it is answered).
        served = {k: after[k] - before[k] - 1 for k in after}
        assert all(v >= 1 for v in served.values()), served
        assert sum(served.values()) >= 20


def test_the_system_page_of_either_instance_shows_both(topo: Topology) -> None:
    with httpx.Client(base_url=topo.a.url) as on_a, httpx.Client(base_url=topo.b.url) as on_b:
        token = sign_in_admin(on_a)
        for client, me in ((on_a, "a"), (on_b, "b")):

            def both(c: httpx.Client = client) -> dict | None:
                body = c.get("/api/metrics", headers=json_headers(token=token)).json()
                return body if {i["instance"] for i in body["instances"]} == {"a", "b"} else None

            metrics = wait_for(both, 15)
            assert metrics["instance"] == me and metrics["instances"][0]["instance"] == me
            alerts = client.get("/api/alerts", headers=json_headers(token=token)).json()
            assert alerts["instance"] == me and set(alerts["instances"]) == {"a", "b"}
            assert all(a["instance"] in ("a", "b") for a in alerts["active"])
            logs = client.get("/api/logs", headers=json_headers(token=token)).json()
            assert logs["instance"] == me and logs["host"]


def test_both_instances_run_while_one_keeps_streams_going(topo: Topology) -> None:
    """Through nginx: a reply streams while other requests land on either instance."""
    with httpx.Client(base_url=topo.nginx.url, timeout=30) as c:
        token = sign_in_admin(c, topo.nginx.url)
        model = first_model_id(c, token)
        results: list[int] = []

        def poll() -> None:
            with httpx.Client(base_url=topo.nginx.url) as other:
                for _ in range(10):
                    results.append(other.get("/api/health").status_code)

        with c.stream(
            "POST",
            "/api/chat",
            json={"model": model, "content": "hi"},
            headers=json_headers(topo.nginx.url, token),
        ) as r:
            events = iter_sse(r)
            assert next(events)[0] == "meta"
            worker = threading.Thread(target=poll)
            worker.start()
            worker.join(20)
            mid = next(events)
            assert mid[0] == "delta"
            r.close()
        assert results == [200] * 10
