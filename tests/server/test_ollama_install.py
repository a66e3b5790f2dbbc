"""``/api/ollama/runtime``: install through the API (SSE like pulls), status, admin only, refusals."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.fakes.fake_releases import FakeReleases
from tests.server.conftest import bearer
from tests.server.ollama_support import read_until_final
from tests.server.services.test_ollama_daemon import FAKE_BIN, free_port


@pytest.fixture
def settings(make_settings: Callable[..., Settings], releases: FakeReleases, empty_path: Path) -> Settings:
    return make_settings(
        ollama_url=f"http://127.0.0.1:{free_port()}",
        ollama_releases_url=releases.base,
        ollama_download_stall_seconds=5.0,
        ollama_stop_grace=5.0,
    )


def test_install_streams_progress_and_status_reports_the_runtime(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    assert client.get("/api/ollama/runtime", headers=bearer(user_token)).status_code == 403
    r = client.get("/api/ollama/runtime", params={"check": "true"}, headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    before = r.json()
    assert before["source"] is None and before["latest_version"] == "0.13.0" and before["size"] > 0
    assert client.post("/api/ollama/runtime/install", headers=bearer(user_token)).status_code == 403

    with client.stream("POST", "/api/ollama/runtime/install", headers=bearer(admin_token)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = read_until_final(r)
    assert events[-1][0] == "done", events
    assert events[-1][1]["version"] == "0.13.0"
    assert {"resolving", "downloading", "verifying", "unpacking", "starting"} <= {
        d.get("phase") for e, d in events if e == "progress"
    }

    status = client.get("/api/ollama/status", headers=bearer(user_token)).json()
    assert status["state"] == "running" and status["managed"] is True
    assert status["runtime"]["source"] == "managed"
    assert status["runtime"]["installed_version"] == "0.13.0"
    assert status["version"] == "0.13.0"

    with client.stream("POST", "/api/ollama/runtime/update", headers=bearer(admin_token)) as r:
        events = read_until_final(r)
    assert events[-1] == ("done", {**events[-1][1], "version": "0.13.0", "changed": False})

    r = client.delete("/api/ollama/runtime/install", headers=bearer(admin_token))
    assert r.status_code == 404 and r.json()["code"] == "runtime_not_running"


def test_install_refused_when_the_user_has_ollama(
    client: TestClient, admin_token: str, empty_path: Path
) -> None:
    (empty_path / "ollama").symlink_to(FAKE_BIN)
    r = client.post("/api/ollama/runtime/install", headers=bearer(admin_token))
    assert r.status_code == 409 and r.json()["code"] == "runtime_user_installed"
    runtime = client.get("/api/ollama/runtime", headers=bearer(admin_token)).json()
    assert runtime["source"] == "user" and runtime["path"] == str(empty_path / "ollama")
    assert os.environ["PATH"] == str(empty_path)


def test_update_without_a_managed_runtime_is_refused(client: TestClient, admin_token: str) -> None:
    r = client.post("/api/ollama/runtime/update", headers=bearer(admin_token))
    assert r.status_code == 409 and r.json()["code"] == "runtime_not_installed"
