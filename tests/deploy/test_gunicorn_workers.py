"""Two gunicorn workers (our worker class, packaging/gunicorn/gunicorn.conf.py) on one PostgreSQL are two
instances: a pull run by one worker is cancelled through the other."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.deploy.support import iter_sse, json_headers, sign_in_admin, start_gunicorn, wait_for
from tests.fakes.fake_ollama import FakeOllama

#: In the fake registry, not installed: ~10 ticks to pull.
PULL = "smollm2:135m"
INSTANCE = "x-modeltrain-instance"


def test_a_pull_is_cancelled_through_the_other_worker(pg_url: str, tmp_path: Path) -> None:
    with FakeOllama(pull_tick=0.5) as fake:  # ~5 s: time to find the other worker
        proc = start_gunicorn(
            tmp_path / "data",
            pg_url,
            tmp_path / "gunicorn.log",
            workers=2,
            MODELTRAIN_OLLAMA_URL=fake.url,
            MODELTRAIN_OLLAMA_DISK_RESERVE_BYTES="0",
            MODELTRAIN_STOP_POLL_SECONDS="0.1",
        )
        opened: list[httpx.Client] = []
        try:
            with httpx.Client(base_url=proc.url, timeout=60) as starter:
                token = sign_in_admin(starter)
                h = json_headers(token=token)
                with starter.stream("POST", "/api/ollama/pull", json={"name": PULL}, headers=h) as r:
                    assert r.status_code == 200, r.read()
                    owner = r.headers[INSTANCE]
                    events = iter_sse(r)
                    assert next(events)[0] == "progress"

                    def other_worker() -> httpx.Client | None:
                        # A kept-alive connection stays with the worker that accepted it: open fresh
                        # ones until one is served by the worker that does not run the pull.
                        client = httpx.Client(base_url=proc.url, timeout=30)
                        opened.append(client)
                        answered = client.get("/api/ollama/pulls", headers=h)
                        assert answered.status_code == 200, answered.text
                        return client if answered.headers[INSTANCE] != owner else None

                    other = wait_for(other_worker, 30, 0.01)

                    def listed() -> dict | None:
                        items = other.get("/api/ollama/pulls", headers=h).json()["items"]
                        return next((p for p in items if p["name"] == PULL and p["state"] == "running"), None)

                    assert wait_for(listed, 10)["instance"] == owner
                    cancel = other.delete(f"/api/ollama/pull/{PULL}", headers=h)
                    assert cancel.status_code == 200, cancel.text
                    assert cancel.headers[INSTANCE] not in (owner, "")
                    assert cancel.json()["state"] == "cancelled" and cancel.json()["instance"] == owner
                    final = next(e for e in events if e[0] in ("done", "error"))
                assert final[0] == "error" and final[1]["code"] == "cancelled"
                names = [m["name"] for m in starter.get("/api/ollama/models", headers=h).json()["items"]]
                assert PULL not in names
        finally:
            for client in opened:
                client.close()
            proc.stop()
