"""``/api/ollama``: status, models, running models, name checks and roles, several Ollama hosts — against
the fake Ollama server, plus the daemon supervised through the app lifespan with the fake ``ollama``
executable. Pulls are in tests/server/services/test_ollama_pulls.py."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.db.models import Provider
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.server.conftest import BASE_URL, bearer
from tests.server.ollama_support import PULL, read_until_final
from tests.server.services.test_ollama_daemon import FAKE_BIN, REPO, free_port, group_members, wait_until


@pytest.fixture
def settings(ollama_settings: Settings) -> Settings:
    return ollama_settings


# --- status and daemon control ---------------------------------------------------------------------


def test_status_readable_by_users_external_fake(
    client: TestClient, user_token: str, fake: FakeOllama
) -> None:
    r = client.get("/api/ollama/status", headers=bearer(user_token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "external"
    assert body["managed"] is False
    assert body["url"] == fake.url
    assert body["version"] == "0.12.0"
    assert client.get("/api/ollama/status").status_code == 401


def test_start_adopts_external_and_stop_refuses(
    client: TestClient, admin_token: str, fake: FakeOllama
) -> None:
    r = client.post("/api/ollama/start", headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "external"
    r = client.post("/api/ollama/stop", headers=bearer(admin_token))
    assert r.status_code == 409
    assert r.json()["code"] == "ollama_external"
    assert client.post("/api/ollama/restart", headers=bearer(admin_token)).status_code == 409
    assert client.get("/api/ollama/status", headers=bearer(admin_token)).json()["state"] == "external"


def test_logs_are_admin_only(client: TestClient, admin_token: str, user_token: str) -> None:
    r = client.get("/api/ollama/logs?tail=5", headers=bearer(admin_token))
    assert r.status_code == 200
    assert r.json() == {"lines": []}
    assert client.get("/api/ollama/logs", headers=bearer(user_token)).status_code == 403
    assert client.get("/api/ollama/logs?tail=0", headers=bearer(admin_token)).status_code == 422


# --- models ----------------------------------------------------------------------------------------


def test_list_models_with_details_and_capabilities(client: TestClient, user_token: str) -> None:
    r = client.get("/api/ollama/models", headers=bearer(user_token))
    assert r.status_code == 200, r.text
    items = {m["name"]: m for m in r.json()["items"]}
    assert set(items) == {"llama3.2:latest", "qwen3:0.6b", "nomic-embed-text:latest"}
    llama = items["llama3.2:latest"]
    assert llama["family"] == "llama"
    assert llama["parameter_size"] == "3.2B"
    assert llama["quantization"] == "Q4_K_M"
    assert llama["format"] == "gguf"
    assert llama["size"] == 2_019_393_189
    assert len(llama["digest"]) == 64
    assert llama["modified_at"]
    assert llama["capabilities"] == ["completion", "tools"]
    assert items["nomic-embed-text:latest"]["capabilities"] == ["embedding"]


def test_show_model_details(client: TestClient, user_token: str) -> None:
    r = client.get("/api/ollama/models/qwen3:0.6b", headers=bearer(user_token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["parameters"].split("\n")[0].split() == ["temperature", "0.6"]
    assert body["license"] == "Apache License 2.0"
    assert "im_start" in body["template"]
    assert body["model_info"]["general.architecture"] == "qwen3"
    assert "thinking" in body["capabilities"]
    # Case is preserved by the grammar; Ollama matches case-insensitively.
    assert client.get("/api/ollama/models/Qwen3:0.6B", headers=bearer(user_token)).status_code == 200
    r = client.get("/api/ollama/models/nope:1b", headers=bearer(user_token))
    assert r.status_code == 404
    assert r.json()["code"] == "model_not_found"


def test_delete_copy_create(client: TestClient, admin_token: str) -> None:
    h = bearer(admin_token)
    r = client.post(
        "/api/ollama/models/copy", json={"source": "llama3.2", "destination": "my-llama:v1"}, headers=h
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"name": "my-llama:v1"}
    r = client.post(
        "/api/ollama/models/copy", json={"source": "llama3.2", "destination": "My-Llama:V1"}, headers=h
    )
    assert r.status_code == 409
    assert r.json()["code"] == "model_exists"
    r = client.post("/api/ollama/models/copy", json={"source": "ghost", "destination": "x:1"}, headers=h)
    assert r.status_code == 404

    body = {
        "name": "helper:v1",
        "from": "qwen3:0.6b",
        "system": "You are terse.",
        "parameters": {"temperature": 0.2, "num_ctx": 8192, "stop": ["END"]},
    }
    r = client.post("/api/ollama/models/create", json=body, headers=h)
    assert r.status_code == 201, r.text
    shown = client.get("/api/ollama/models/helper:v1", headers=h).json()
    assert shown["system"] == "You are terse."
    assert ["temperature", "0.2"] in [line.split() for line in shown["parameters"].split("\n")]
    r = client.post(
        "/api/ollama/models/create", json={**body, "name": "x:1", "parameters": {"evil": 1}}, headers=h
    )
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_parameter"
    r = client.post("/api/ollama/models/create", json={**body, "name": "x:1", "insecure": True}, headers=h)
    assert r.status_code == 422  # unknown fields (like `insecure`) are refused, never passed on

    assert client.delete("/api/ollama/models/my-llama:v1", headers=h).status_code == 204
    names = [m["name"] for m in client.get("/api/ollama/models", headers=h).json()["items"]]
    assert "my-llama:v1" not in names and "helper:v1" in names
    r = client.delete("/api/ollama/models/my-llama:v1", headers=h)
    assert r.status_code == 404


# --- running models --------------------------------------------------------------------------------


def test_load_pin_and_unload(client: TestClient, admin_token: str, user_token: str) -> None:
    h = bearer(admin_token)
    assert client.get("/api/ollama/running", headers=bearer(user_token)).json() == {"items": [], "total": 0}
    r = client.post("/api/ollama/running/llama3.2/load", json={"keep_alive": -1}, headers=h)
    assert r.status_code == 204, r.text
    r = client.post("/api/ollama/running/nomic-embed-text/load", json={"keep_alive": "10m"}, headers=h)
    assert r.status_code == 204, r.text  # embedding-only: loaded through /api/embed
    items = {
        m["name"]: m for m in client.get("/api/ollama/running", headers=bearer(user_token)).json()["items"]
    }
    assert set(items) == {"llama3.2:latest", "nomic-embed-text:latest"}
    assert items["llama3.2:latest"]["pinned"] is True
    assert items["llama3.2:latest"]["vram_share"] == 1.0
    assert items["llama3.2:latest"]["size_vram"] == items["llama3.2:latest"]["size"] > 0
    assert items["nomic-embed-text:latest"]["pinned"] is False
    assert client.post("/api/ollama/running/llama3.2/unload", headers=h).status_code == 204
    assert client.post("/api/ollama/running/nomic-embed-text/unload", headers=h).status_code == 204
    assert client.get("/api/ollama/running", headers=h).json()["items"] == []
    r = client.post("/api/ollama/running/llama3.2/load", json={"keep_alive": "300"}, headers=h)
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_keep_alive"


# --- names (docs/security.md, C4) and roles -------------------------------------------------------

BAD_NAMES = [
    "../x",
    "a/../../b",
    "%2e%2e",
    "..",
    "a..b",
    "%2e%2e%2fetc",
    "..\\x",
    "/etc/passwd",
    "C:\\x",
    "my model",
    "m@sha256:" + "a" * 64,
    "ns/.m",
    "-m",
    "m:",
    "a/b/c/d",
    "llama3.2\n",
    "x\x00y",
    "é",
    "x" * 81,
    "h" * 351 + "/n/m:t",
    "http://evil.example/x",
]


def test_invalid_names_are_refused_before_reaching_ollama(
    client: TestClient, admin_token: str, fake: FakeOllama
) -> None:
    h = bearer(admin_token)
    before = list(fake.requests)
    for name in BAD_NAMES:
        calls = [
            ("POST", "/api/ollama/pull", {"name": name}),
            ("POST", "/api/ollama/models/copy", {"source": name, "destination": "ok:1"}),
            ("POST", "/api/ollama/models/copy", {"source": "llama3.2", "destination": name}),
            ("POST", "/api/ollama/models/create", {"name": name, "from": "llama3.2"}),
            ("POST", "/api/ollama/models/create", {"name": "ok:1", "from": name}),
        ]
        path = quote(name, safe="").replace(".", "%2E")  # or the client would resolve dot segments itself
        if name.endswith("\n"):
            # Starlette's path routing drops one trailing newline ("llama3.2" is what arrives, a valid name).
            path = ""
        calls += (
            []
            if not path
            else [
                ("GET", f"/api/ollama/models/{path}", None),
                ("DELETE", f"/api/ollama/models/{path}", None),
                ("POST", f"/api/ollama/running/{path}/unload", None),
                ("POST", f"/api/ollama/running/{path}/load", {}),
                ("DELETE", f"/api/ollama/pull/{path}", None),
                ("GET", f"/api/ollama/pulls/{path}/events", None),
            ]
        )
        for method, url, body in calls:
            r = client.request(method, url, json=body, headers=h)
            assert r.status_code == 422, (name, method, url, r.status_code, r.text)
            assert {"code", "message", "detail"} <= set(r.json())
    # Raw traversal in the path, percent-encoded once.
    for url in ("/api/ollama/models/..%2F..%2Fetc%2Fpasswd", "/api/ollama/models/%2e%2e%2f%2e%2e%2fx"):
        assert client.delete(url, headers=h).status_code == 422
        assert client.get(url, headers=h).status_code == 422
    # Policy on names that make Ollama contact a registry.
    for name in ("evil.example/ns/m:1", "registry.local:5000/team/m", "gpt-oss:20b-cloud", "qwen3:cloud"):
        r = client.post("/api/ollama/pull", json={"name": name}, headers=h)
        assert r.status_code == 422, name
    assert fake.requests == before


def test_changes_need_an_admin(client: TestClient, user_token: str, fake: FakeOllama) -> None:
    h = bearer(user_token)
    before = list(fake.requests)
    calls = [
        ("POST", "/api/ollama/start", None),
        ("POST", "/api/ollama/stop", None),
        ("POST", "/api/ollama/restart", None),
        ("GET", "/api/ollama/logs", None),
        ("DELETE", "/api/ollama/models/llama3.2", None),
        ("POST", "/api/ollama/models/copy", {"source": "llama3.2", "destination": "x:1"}),
        ("POST", "/api/ollama/models/create", {"name": "x:1", "from": "llama3.2"}),
        ("POST", "/api/ollama/running/llama3.2/unload", None),
        ("POST", "/api/ollama/running/llama3.2/load", {}),
        ("POST", "/api/ollama/pull", {"name": PULL}),
        ("GET", "/api/ollama/pulls", None),
        ("GET", f"/api/ollama/pulls/{PULL}/events", None),
        ("DELETE", f"/api/ollama/pull/{PULL}", None),
    ]
    for method, url, body in calls:
        r = client.request(method, url, json=body, headers=h)
        assert r.status_code == 403, (method, url, r.text)
        assert r.json()["code"] == "admin_required"
    assert fake.requests == before
    for url in (
        "/api/ollama/status",
        "/api/ollama/models",
        "/api/ollama/models/llama3.2",
        "/api/ollama/running",
    ):
        assert client.get(url, headers=h).status_code == 200, url


# --- several Ollama hosts --------------------------------------------------------------------------


def add_provider(client: TestClient, name: str, kind: str, url: str) -> uuid.UUID:
    factory = client.app.state.runtime.session_factory
    with factory() as session:
        row = Provider(name=name, kind=kind, base_url=url)
        session.add(row)
        session.commit()
        return row.id


def test_each_ollama_provider_has_its_own_status_and_models(
    client: TestClient, admin_token: str, user_token: str, fake: FakeOllama, disk: dict
) -> None:
    with FakeOllama(models={"only-here:latest": {}}, pull_tick=0.01) as second:
        pid = add_provider(client, "second box", "ollama", second.url)
        q = f"?provider={pid}"
        r = client.get(f"/api/ollama/status{q}", headers=bearer(user_token))
        assert r.status_code == 200
        assert r.json()["url"] == second.url and r.json()["state"] == "external"
        assert r.json()["provider_id"] == str(pid)
        names = [
            m["name"]
            for m in client.get(f"/api/ollama/models{q}", headers=bearer(user_token)).json()["items"]
        ]
        assert names == ["only-here:latest"]
        before = list(fake.requests)
        h = bearer(admin_token)
        with client.stream("POST", f"/api/ollama/pull{q}", json={"name": PULL}, headers=h) as r:
            assert read_until_final(r)[-1][0] == "done"
        assert ("POST", "/api/pull") in second.requests and ("POST", "/api/pull") not in fake.requests[
            len(before) :
        ]
        assert disk["asked"]  # loopback host: the local models dir is checked
        assert client.get(f"/api/ollama/pulls{q}", headers=h).json()["items"][0]["provider_id"] == str(pid)
        assert client.get("/api/ollama/pulls", headers=h).json()["items"] == []
    # Gone: it is reported, not an error.
    r = client.get(f"/api/ollama/status{q}", headers=bearer(user_token))
    assert r.json()["state"] == "stopped" and r.json()["managed"] is False
    r = client.get(f"/api/ollama/models{q}", headers=bearer(user_token))
    assert r.status_code == 503 and r.json()["code"] == "ollama_unreachable"
    # Unknown ids and non-Ollama providers are 404; a malformed id is 422.
    other = add_provider(client, "openai", "openai", "https://api.openai.com/v1")
    assert (
        client.get(f"/api/ollama/models?provider={uuid.uuid4()}", headers=bearer(user_token)).status_code
        == 404
    )
    assert client.get(f"/api/ollama/models?provider={other}", headers=bearer(user_token)).status_code == 404
    assert client.get("/api/ollama/models?provider=nope", headers=bearer(user_token)).status_code == 422


def test_create_from_a_modelfile(client: TestClient, admin_token: str, fake: FakeOllama) -> None:
    h = bearer(admin_token)
    modelfile = (
        "FROM qwen3:0.6b\n"
        'SYSTEM """You are terse.\nAnswer in one line."""\n'
        "TEMPLATE {{ .Prompt }}\n"
        "PARAMETER temperature 0.3\n"
        "PARAMETER stop END\n"
        "ADAPTER sha256:" + "c" * 64 + "\n"
        "MESSAGE user Hi\n"
    )
    r = client.post("/api/ollama/models/create", json={"name": "mf:v1", "modelfile": modelfile}, headers=h)
    assert r.status_code == 201, r.text
    shown = client.get("/api/ollama/models/mf:v1", headers=h).json()
    assert shown["system"] == "You are terse.\nAnswer in one line."
    assert shown["template"] == "{{ .Prompt }}"
    assert ["temperature", "0.3"] in [line.split() for line in shown["parameters"].split("\n")]

    def create(body: dict) -> tuple[int, dict]:
        r = client.post("/api/ollama/models/create", json={"name": "bad:v1", **body}, headers=h)
        return r.status_code, r.json()

    status, body = create({"modelfile": "SYSTEM hi"})
    assert (status, body["code"]) == (422, "invalid_modelfile") and "FROM is missing" in body["message"]
    status, body = create({"modelfile": "FROM qwen3:0.6b\nRUN rm -rf /"})
    assert (status, body["code"], body["detail"]["line"]) == (422, "invalid_modelfile", 2)
    status, body = create({"modelfile": "FROM evil.example/x/y"})
    assert (status, body["code"]) == (422, "registry_not_allowed")
    status, body = create({"modelfile": "FROM qwen3:0.6b", "from": "qwen3:0.6b"})
    assert (status, body["code"]) == (422, "invalid_create")
    status, body = create({"modelfile": "FROM qwen3:0.6b", "system": "x"})
    assert (status, body["code"]) == (422, "invalid_create")
    status, body = create({})
    assert (status, body["code"]) == (422, "invalid_create")
    status, body = create({"from": "qwen3:0.6b", "quantize": "q2"})
    assert status == 422
    # the fake's models are already Q4_K_M: Ollama refuses, and the answer says why
    status, body = create({"from": "qwen3:0.6b", "quantize": "q8_0"})
    assert (status, body["code"]) == (422, "quantize_unsupported")
    names = [m["name"] for m in client.get("/api/ollama/models", headers=h).json()["items"]]
    assert "bad:v1" not in names


def test_quantize_is_passed_to_ollama(client: TestClient, admin_token: str) -> None:
    h = bearer(admin_token)
    with FakeOllama(models={"base:f16": {"quantization_level": "F16", "size": 6_400_000_000}}) as f16:
        q = f"?provider={add_provider(client, 'f16 box', 'ollama', f16.url)}"
        body = {
            "name": "small:q4",
            "modelfile": "FROM base:f16\nPARAMETER num_ctx 4096",
            "quantize": "q4_K_M",
        }
        r = client.post(f"/api/ollama/models/create{q}", json=body, headers=h)
        assert r.status_code == 201, r.text
        items = {m["name"]: m for m in client.get(f"/api/ollama/models{q}", headers=h).json()["items"]}
        assert items["small:q4"]["quantization"] == "Q4_K_M"
        assert items["small:q4"]["size"] < items["base:f16"]["size"]
        assert items["base:f16"]["quantization"] == "F16"


def test_model_calls_target_the_chosen_provider(
    client: TestClient, admin_token: str, user_token: str, fake: FakeOllama
) -> None:
    h = bearer(admin_token)
    with FakeOllama(models={"only-here:latest": {}}) as second:
        q = f"?provider={add_provider(client, 'second box', 'ollama', second.url)}"
        before = len(fake.requests)
        r = client.post(f"/api/ollama/running/only-here/load{q}", json={"keep_alive": -1}, headers=h)
        assert r.status_code == 204, r.text
        running = client.get(f"/api/ollama/running{q}", headers=bearer(user_token)).json()["items"]
        assert [(m["name"], m["pinned"]) for m in running] == [("only-here:latest", True)]
        assert client.get("/api/ollama/running", headers=h).json()["items"] == []
        assert client.get(f"/api/ollama/models/only-here{q}", headers=h).status_code == 200
        r = client.post(
            f"/api/ollama/models/create{q}",
            json={"name": "derived:v1", "modelfile": "FROM only-here\nSYSTEM Be brief."},
            headers=h,
        )
        assert r.status_code == 201, r.text
        r = client.post(
            f"/api/ollama/models/copy{q}", json={"source": "derived:v1", "destination": "copy:v1"}, headers=h
        )
        assert r.status_code == 201, r.text
        assert client.delete(f"/api/ollama/models/derived:v1{q}", headers=h).status_code == 204
        assert client.post(f"/api/ollama/running/only-here/unload{q}", headers=h).status_code == 204
        assert client.get(f"/api/ollama/running{q}", headers=h).json()["items"] == []
        names = {m["name"] for m in client.get(f"/api/ollama/models{q}", headers=h).json()["items"]}
        assert names == {"only-here:latest", "copy:v1"}
        # the default host saw none of it
        assert fake.requests[before:] == [("GET", "/api/ps")]  # only the one listing asked of it
        assert "copy:v1" not in {
            m["name"] for m in client.get("/api/ollama/models", headers=h).json()["items"]
        }


# --- the supervised daemon through the app lifespan -----------------------------------------------


def test_autostarted_daemon_survives_kill_and_leaves_nothing_at_exit(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ollama").symlink_to(FAKE_BIN)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_OLLAMA_REPO", str(REPO))
    port = free_port()
    settings = make_settings(
        ollama_url=f"http://127.0.0.1:{port}",
        ollama_autostart=True,
        ollama_restart_backoff=0.1,
        ollama_stop_grace=5,
    )
    from tests.server.conftest import ADMIN_PASSWORD, INITIAL_PASSWORD, login

    with TestClient(create_app(settings), base_url=BASE_URL) as client:
        token = login(client, "admin@example.com", INITIAL_PASSWORD)
        token = client.post(
            "/api/auth/password",
            json={"current_password": INITIAL_PASSWORD, "new_password": ADMIN_PASSWORD},
            headers=bearer(token),
        ).json()["access_token"]
        h = bearer(token)

        def status() -> dict:
            return client.get("/api/ollama/status", headers=h).json()

        assert wait_until(lambda: status()["state"] == "running", 30), status()
        first = status()
        assert first["managed"] is True and first["version"] == "0.12.0"
        os.kill(first["pid"], signal.SIGKILL)
        assert wait_until(lambda: status()["state"] == "running" and status()["pid"] != first["pid"], 30)
        assert status()["restart_count"] == 1
        assert any(
            "Listening on" in line for line in client.get("/api/ollama/logs", headers=h).json()["lines"]
        )
        # Models are served by the supervised process.
        assert client.get("/api/ollama/models", headers=h).status_code == 200
        r = client.post("/api/ollama/stop", headers=h)
        assert r.json()["state"] == "stopped"
        r = client.post("/api/ollama/start", headers=h)
        assert r.json()["state"] == "running", r.text
        r = client.post("/api/ollama/restart", headers=h)
        assert r.json()["state"] == "running" and r.json()["restart_count"] == 0
        last_pid = r.json()["pid"]
    # App exit: the child and its whole group are gone.
    assert group_members(last_pid) == []
    assert not (settings.data_dir / "ollama.pid").exists()
