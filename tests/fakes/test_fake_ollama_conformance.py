"""The fake Ollama server speaks the protocol of docs/protocols.md, §A well enough for the official client."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from tests.fakes import FakeOllama, wait_until
from tests.fakes.fake_ollama import (
    BLOBS_DIR,
    BUSY,
    FILE_PATH_NOT_RELATIVE,
    MANIFEST_MISSING,
    NOT_GGUF,
    RUNNER_FAILURE,
    parse_name,
)
from tests.fakes.gguf import make_gguf

REPO = Path(__file__).resolve().parents[2]
REPLY = "Hello there, this is a fixed reply."
USER = [{"role": "user", "content": "Hi!"}]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(pull_tick=0.001, reply=REPLY) as server:
        yield server


@pytest.fixture
def client(fake: FakeOllama) -> Iterator[ollama.Client]:
    with ollama.Client(host=fake.url, timeout=10) as official:
        yield official


@pytest.fixture
def http(fake: FakeOllama) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=10) as raw:
        yield raw


def ndjson(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.text.splitlines()]


# --- liveness, listing, metadata ---


def test_liveness_version_and_router_errors(http: httpx.Client) -> None:
    root = http.get("/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert root.headers["content-type"] == "text/plain; charset=utf-8"
    assert http.head("/").status_code == 200
    version = http.get("/api/version")
    assert version.json() == {"version": "0.12.0"}
    assert version.headers["content-type"] == "application/json; charset=utf-8"
    assert (http.get("/nope").status_code, http.get("/nope").text) == (404, "404 page not found")
    assert (http.get("/api/chat").status_code, http.get("/api/chat").text) == (405, "405 method not allowed")


def test_list_show_and_ps(client: ollama.Client) -> None:
    names = [m.model for m in client.list().models]
    assert names == ["llama3.2:latest", "qwen3:0.6b", "nomic-embed-text:latest"]  # newest first
    shown = client.show("Qwen3:0.6B")  # names match case-insensitively
    assert {"completion", "tools", "thinking"} <= set(shown.capabilities or [])
    assert shown.modelinfo["general.architecture"] == "qwen3"
    assert shown.modelinfo["qwen3.context_length"] == 40960
    assert shown.details.family == "qwen3"
    assert client.ps().models == []


# --- chat and generate ---


def test_chat_stream_is_ndjson_with_one_final_line(http: httpx.Client) -> None:
    with http.stream("POST", "/api/chat", json={"model": "llama3.2", "messages": USER}) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        assert "content-length" not in response.headers
        lines = [json.loads(line) for line in response.iter_lines()]
    *chunks, final = lines
    assert all(c["done"] is False and "total_duration" not in c for c in chunks)
    assert "".join(c["message"]["content"] for c in chunks) == REPLY
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["eval_count"] == len(chunks)
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int) and final[key] > 0
    assert final["created_at"].endswith("Z")


def test_chat_with_official_client(client: ollama.Client) -> None:
    streamed = list(client.chat("llama3.2", messages=USER, stream=True))
    assert "".join(part.message.content for part in streamed) == REPLY
    assert streamed[-1].done and streamed[-1].done_reason == "stop"
    whole = client.chat("llama3.2", messages=USER)
    assert whole.message.content == REPLY and whole.done_reason == "stop"
    assert [m.model for m in client.ps().models] == ["llama3.2:latest"]


def test_thinking_models_think(client: ollama.Client) -> None:
    parts = list(client.chat("qwen3:0.6b", messages=USER, think=True, stream=True))
    kinds = ["thinking" if p.message.thinking else "content" for p in parts[:-1]]
    assert kinds == sorted(kinds, reverse=True) and "thinking" in kinds  # thinking first, then content
    assert client.chat("qwen3:0.6b", messages=USER).message.thinking  # unset means on
    assert client.chat("qwen3:0.6b", messages=USER, think=False).message.thinking is None
    with pytest.raises(ollama.ResponseError) as error:
        client.chat("llama3.2", messages=USER, think=True)
    assert (error.value.status_code, error.value.error) == (400, '"llama3.2" does not support thinking')


def test_generate(client: ollama.Client) -> None:
    parts = list(client.generate("llama3.2", "Hi!", stream=True))
    assert "".join(p.response for p in parts) == REPLY
    assert parts[-1].done and parts[-1].context
    whole = client.generate("llama3.2", "Hi!", options={"num_predict": 3})
    assert (whole.response, whole.done_reason, whole.eval_count) == ("Hello there, this", "length", 3)
    assert client.generate("llama3.2", "Hi!", raw=True).context is None


def test_load_and_unload_update_ps(client: ollama.Client) -> None:
    assert client.chat("qwen3:0.6b", messages=[]).done_reason == "load"
    assert [m.name for m in client.ps().models] == ["qwen3:0.6b"]
    assert client.chat("qwen3:0.6b", messages=[], keep_alive=0).done_reason == "unload"
    assert client.ps().models == []
    assert client.generate("llama3.2", keep_alive=-1).done_reason == "load"
    assert client.ps().models[0].expires_at.year > 2200  # "forever"
    client.generate("llama3.2", "Hi!", keep_alive=0)  # unloads once the answer is done
    assert client.ps().models == []


def test_embed(client: ollama.Client, fake: FakeOllama) -> None:
    vectors = client.embed("nomic-embed-text", ["one", "two"]).embeddings
    assert len(vectors) == 2 and len(vectors[0]) == 768
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-4
    # Deterministic and meaningful (a bag of words): shared words make texts close.
    again = client.embed("nomic-embed-text", ["one"]).embeddings[0]
    assert again == vectors[0]
    assert fake.embedded[:2] == [("nomic-embed-text", ["one", "two"]), ("nomic-embed-text", ["one"])]

    def cosine(a: str, b: str) -> float:
        va, vb = client.embed("nomic-embed-text", [a, b]).embeddings
        return sum(x * y for x, y in zip(va, vb, strict=True))

    assert cosine("the volcano erupted", "a volcano erupted loudly") > cosine(
        "the volcano erupted", "tax forms"
    )
    assert (
        client.embed("nomic-embed-text", "...").embeddings[0] != [0.0] * 768
    )  # no words: still a unit vector
    with pytest.raises(ollama.ResponseError) as error:
        client.embed("missing", "x")
    assert error.value.status_code == 404
    assert error.value.error == 'model "missing" not found, try pulling it first'


# --- pull, delete, copy, create ---


def test_pull_reports_blobs_one_at_a_time(http: httpx.Client, client: ollama.Client) -> None:
    events = ndjson(http.post("/api/pull", json={"model": "tinyllama"}))
    statuses = [e["status"] for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    progress = events[1:-3]
    order = [e["digest"] for e in progress]
    assert order == sorted(order, key=order.index)  # contiguous runs: never interleaved
    for event in progress:
        assert event["status"] == f"pulling {event['digest'][7:19]}"
        assert event.get("completed", 0) <= event["total"]
    assert "completed" not in progress[0]  # omitted while 0
    assert all(e["completed"] == e["total"] for e in progress if e["digest"] != progress[0]["digest"])
    assert "tinyllama:latest" in [m.model for m in client.list().models]


def test_pull_with_official_client(client: ollama.Client) -> None:
    progress = list(client.pull("smollm2:135m", stream=True))
    assert progress[-1].status == "success"
    assert any(p.completed and p.total and p.completed < p.total for p in progress)
    assert client.pull("smollm2:135m").status == "success"  # stream:false; already present now


def test_pull_failures(fake: FakeOllama, client: ollama.Client, http: httpx.Client) -> None:
    with pytest.raises(ollama.ResponseError) as error:
        list(client.pull("no-such-model", stream=True))
    assert (error.value.status_code, error.value.error) == (-1, MANIFEST_MISSING)
    answer = http.post("/api/pull", json={"model": "no-such-model", "stream": False})
    assert (answer.status_code, answer.json()) == (500, {"error": MANIFEST_MISSING})
    assert http.post("/api/pull", json={"model": "bad name"}).json() == {"error": "invalid model name"}
    fake.pull_fail_after = 3
    events = ndjson(http.post("/api/pull", json={"model": "tinyllama"}))
    assert len(events) == 5 and "error" in events[-1] and "tinyllama:latest" not in fake.models


def test_delete_and_copy(http: httpx.Client, client: ollama.Client) -> None:
    copied = http.post("/api/copy", json={"source": "llama3.2", "destination": "mine:v1"})
    assert (copied.status_code, copied.content) == (200, b"")
    assert client.show("mine:v1").details.family == "llama"
    deleted = http.request("DELETE", "/api/delete", json={"model": "MINE:v1"})
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert client.delete("llama3.2").status == "success"
    assert client.copy("qwen3:0.6b", "other").status == "success"
    cases = [
        (lambda: client.delete("llama3.2"), 404, "model 'llama3.2' not found"),
        (lambda: client.delete("bad name"), 400, 'name "bad name" is invalid'),
        (lambda: client.copy("gone", "x"), 404, 'model "gone" not found'),
        (lambda: client.copy("a b", "x"), 400, 'source "a b" is invalid'),
        (lambda: client.copy("other", "-x"), 400, 'destination "-x" is invalid'),
    ]
    for call, status, message in cases:
        with pytest.raises(ollama.ResponseError) as error:
            call()
        assert (error.value.status_code, error.value.error) == (status, message)


def test_create_from_local_and_from_registry(client: ollama.Client, http: httpx.Client) -> None:
    statuses = [
        p.status
        for p in client.create(
            "terse", from_="llama3.2", system="Be terse.", parameters={"temperature": 0.1}, stream=True
        )
    ]
    assert statuses[0].startswith("using existing layer sha256:")
    assert any(s.startswith("creating new layer sha256:") for s in statuses)
    assert statuses[-2:] == ["writing manifest", "success"]
    shown = http.post("/api/show", json={"model": "terse"}).json()
    assert shown["system"] == "Be terse." and "temperature" in shown["parameters"]
    pulled = [p.status for p in client.create("tiny2", from_="tinyllama", stream=True)]
    assert pulled[0] == "pulling manifest" and pulled[-1] == "success"
    with pytest.raises(ollama.ResponseError) as error:
        client.create("x", from_="nope")  # stream:false: a failed implicit pull is a 500
    assert (error.value.status_code, error.value.error) == (500, MANIFEST_MISSING)


def _gguf_file(tmp_path: Path, name: str = "m.gguf", **meta: str | int) -> tuple[Path, bytes, str]:
    data = make_gguf(meta or None, padding=3000)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data, "sha256:" + hashlib.sha256(data).hexdigest()


def test_blobs_and_create_from_files(client: ollama.Client, http: httpx.Client, tmp_path: Path) -> None:
    path, data, digest = _gguf_file(
        tmp_path,
        **{
            "general.architecture": "qwen2",
            "general.file_type": 7,
            "general.size_label": "500M",
            "qwen2.context_length": 32768,
        },
    )
    assert http.head(f"/api/blobs/{digest}").status_code == 404
    assert client.create_blob(path) == digest  # the official helper: POST, 201
    assert http.head(f"/api/blobs/{digest}").status_code == 200
    assert http.head(f"/api/blobs/sha256-{digest[7:]}").status_code == 200  # one file, both spellings
    again = http.post(f"/api/blobs/{digest}", content=data)
    assert (again.status_code, again.content) == (200, b"")
    statuses = [p.status for p in client.create(model="mine:q8", files={"m.gguf": digest}, stream=True)]
    assert statuses[:2] == ["parsing GGUF", f"using existing layer {digest}"]
    assert statuses[-2:] == ["writing manifest", "success"]
    listed = {m.model: m for m in client.list().models}
    model = listed["mine:q8"]
    assert model.size == len(data) and model.details is not None
    assert (model.details.format, model.details.family) == ("gguf", "qwen2")
    assert (model.details.parameter_size, model.details.quantization_level) == ("500M", "Q8_0")
    shown = client.show("mine:q8")
    assert shown.modelinfo is not None and shown.modelinfo["qwen2.context_length"] == 32768


def test_blob_and_create_from_files_errors(
    fake: FakeOllama, client: ollama.Client, http: httpx.Client, tmp_path: Path
) -> None:
    _, data, digest = _gguf_file(tmp_path)
    bad = http.post("/api/blobs/sha256:abc", content=b"x")
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid digest format"})
    assert http.head("/api/blobs/md5:abc").status_code == 400
    assert http.get(f"/api/blobs/{digest}").status_code == 405
    other = "sha256:" + "0" * 64
    mismatch = http.post(f"/api/blobs/{other}", content=data)
    expected = f'digest mismatch, expected "{other}", got "{digest}"'
    assert (mismatch.status_code, mismatch.json()) == (400, {"error": expected})
    assert fake.blobs == {}
    # create from a blob that was never uploaded: after "parsing GGUF", the file is missing
    with pytest.raises(ollama.ResponseError) as error:
        client.create(model="ghost", files={"m.gguf": digest})
    assert error.value.status_code == 500
    assert error.value.error == f"open {BLOBS_DIR}/sha256-{digest[7:]}: no such file or directory"
    streamed = http.post("/api/create", json={"model": "ghost", "files": {"m.gguf": digest}})
    assert streamed.status_code == 200 and ndjson(streamed)[0] == {"status": "parsing GGUF"}
    assert "no such file or directory" in ndjson(streamed)[-1]["error"]
    # a blob that is not GGUF; a file path that is not relative
    text = tmp_path / "notes.txt"
    text.write_bytes(b"hello, not a model")
    text_digest = client.create_blob(text)
    with pytest.raises(ollama.ResponseError) as error:
        client.create(model="notes", files={"notes.gguf": text_digest})
    assert (error.value.status_code, error.value.error) == (400, NOT_GGUF)
    with pytest.raises(ollama.ResponseError) as error:
        client.create(model="abs", files={"/etc/m.gguf": digest})
    assert (error.value.status_code, error.value.error) == (400, FILE_PATH_NOT_RELATIVE)
    assert "ghost" not in {m.model for m in client.list().models}
    # Ollama going away mid-upload: the connection drops, nothing is stored
    big = tmp_path / "big.gguf"
    big.write_bytes(make_gguf(padding=4 << 20))
    fake.blob_fail_after = 1 << 20
    with pytest.raises((httpx.TransportError, ConnectionError)):
        client.create_blob(big)
    assert set(fake.blobs) == {text_digest.replace(":", "-")}


# --- errors ---


REQUEST_ERRORS = [  # (path, raw body, status, error text)
    ("/api/chat", b"", 400, "missing request body"),
    ("/api/chat", b'{"model":', 400, "unexpected EOF"),
    ("/api/chat", b'{"model": }', 400, "invalid character '}' looking for beginning of value"),
    ("/api/show", b"[]", 400, "json: cannot unmarshal array into Go value of type api.ShowRequest"),
    (
        "/api/chat",
        b'{"model": 7}',
        400,
        "json: cannot unmarshal number into Go struct field ChatRequest.model of type string",
    ),
    ("/api/chat", b'{"messages": []}', 400, "model is required"),
    ("/api/generate", b'{"prompt": "x"}', 404, "model '' not found"),
    ("/api/chat", b'{"model": "bad name"}', 400, "invalid model name"),
    ("/api/chat", b'{"model": "llama3.2", "keep_alive": "300"}', 400, 'time: missing unit in duration "300"'),
    (
        "/api/chat",
        b'{"model": "llama3.2", "think": "x"}',
        400,
        'invalid think value: "x" (must be "high", "medium", "low", "max", true, or false)',
    ),
    (
        "/api/chat",
        b'{"model": "nomic-embed-text", "messages": [{"role": "user", "content": "x"}]}',
        400,
        '"nomic-embed-text" does not support chat',
    ),
    ("/api/create", b'{"model": "x"}', 400, "neither 'from' or 'files' was specified"),
]


def test_request_errors(http: httpx.Client) -> None:
    for path, body, status, message in REQUEST_ERRORS:
        answer = http.post(path, content=body, headers={"content-type": "text/plain"})  # type is not checked
        assert (answer.status_code, answer.json()) == (status, {"error": message}), (path, body)
        assert answer.headers["content-type"] == "application/json; charset=utf-8"


def test_unknown_and_invalid_model_names(fake: FakeOllama, client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as error:
        client.chat("nope", messages=USER)
    assert (error.value.status_code, error.value.error) == (404, "model 'nope' not found")
    with pytest.raises(ollama.ResponseError) as error:
        client.show("../etc/passwd")
    assert (error.value.status_code, error.value.error) == (400, "invalid model name")
    fake.legacy_not_found = True
    with pytest.raises(ollama.ResponseError) as error:
        client.generate("nope", "x")
    assert error.value.error == 'model "nope" not found, try pulling it first'


def test_midstream_error_line(fake: FakeOllama, client: ollama.Client, http: httpx.Client) -> None:
    fake.fail_after_chunks = 3
    received = []
    with pytest.raises(ollama.ResponseError) as error:
        received.extend(client.chat("llama3.2", messages=USER, stream=True))  # keeps what came first
    assert (len(received), error.value.status_code, error.value.error) == (3, -1, RUNNER_FAILURE)
    answer = http.post("/api/generate", json={"model": "llama3.2", "prompt": "x"})
    assert answer.status_code == 200 and ndjson(answer)[-1] == {"error": RUNNER_FAILURE}
    assert not any(line.get("done") for line in ndjson(answer))
    stream_false = http.post("/api/chat", json={"model": "llama3.2", "messages": USER, "stream": False})
    assert (stream_false.status_code, stream_false.json()) == (500, {"error": RUNNER_FAILURE})
    fake.fail_after_chunks = 0  # before the first byte: a real HTTP status
    with pytest.raises(ollama.ResponseError) as error:
        list(client.chat("llama3.2", messages=USER, stream=True))
    assert error.value.status_code == 500


def test_busy(fake: FakeOllama, client: ollama.Client) -> None:
    fake.busy = True
    with pytest.raises(ollama.ResponseError) as error:
        client.chat("llama3.2", messages=USER)
    assert (error.value.status_code, error.value.error) == (503, BUSY)


def test_host_and_origin_check_knob(fake: FakeOllama, http: httpx.Client) -> None:
    assert http.get("/api/version", headers={"host": "evil.example"}).status_code == 200  # off by default
    fake.check_host = True
    refused = http.get("/api/version", headers={"host": "evil.example"})
    assert (refused.status_code, refused.content) == (403, b"")
    for host in (f"localhost:{fake.port}", "127.0.0.1", "box.local", "10.0.0.7:11434"):
        assert http.get("/api/version", headers={"host": host}).status_code == 200
    assert http.get("/api/version", headers={"origin": "https://evil.example"}).status_code == 403
    assert http.get("/api/version", headers={"origin": "http://localhost:5173"}).status_code == 200


# --- timing knobs and cancellation ---


def test_client_disconnect_stops_generation(fake: FakeOllama, http: httpx.Client) -> None:
    fake.token_delay = 0.05
    with http.stream("POST", "/api/chat", json={"model": "llama3.2", "messages": USER}) as response:
        lines = response.iter_lines()
        next(lines), next(lines)
        assert fake.active_streams == 1
    assert wait_until(lambda: fake.active_streams == 0)
    assert fake.disconnects == 1


def test_hang_and_load_delay_send_no_bytes(fake: FakeOllama) -> None:
    fake.hang = True
    with httpx.Client(base_url=fake.url, timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.post("/api/chat", json={"model": "llama3.2", "messages": USER})
        with pytest.raises(httpx.ReadTimeout):
            impatient.get("/api/tags")
        assert wait_until(lambda: fake.active_streams == 0 and fake.disconnects == 1)
        fake.hang, fake.load_delay = False, 5.0
        with pytest.raises(httpx.ReadTimeout):  # not even the status line before the first chunk
            impatient.post("/api/generate", json={"model": "llama3.2", "prompt": "x"})
        assert wait_until(lambda: fake.active_streams == 0 and fake.disconnects == 2)


# --- model names (§F.4) ---


@pytest.mark.parametrize(
    ("text", "full"),
    [
        ("llama3.2", "registry.ollama.ai/library/llama3.2:latest"),
        ("library/llama3.2", "registry.ollama.ai/library/llama3.2:latest"),
        ("jdoe/my-model:v1.2", "registry.ollama.ai/jdoe/my-model:v1.2"),
        ("hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M", "hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M"),
        ("registry.local:5000/team/m:dev", "registry.local:5000/team/m:dev"),
        ("_why/_the/_lucky:_stiff", "_why/_the/_lucky:_stiff"),
        ("https://registry.ollama.ai/library/m:t", "registry.ollama.ai/library/m:t"),
    ]
    + [
        (bad, None)
        for bad in (
            "m:",
            ":t",
            "/m",
            "a//m",
            "-m",
            "m:-t",
            "ns/.m",
            "name.space/m",
            "host/name:space/model:tag",
            "a/b/c/d",
            "m@sha256:abc",
            "../etc/passwd",
            "my model",
            "m" * 81,
            "",
        )
    ],
)
def test_model_name_grammar(text: str, full: str | None) -> None:
    name = parse_name(text)
    assert (name.full if name else None) == full


# --- the `ollama` executable and the standalone module ---


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(url: str) -> bool:
    def answers() -> bool:
        try:
            return httpx.get(url, timeout=0.5).text == "Ollama is running"
        except httpx.TransportError:
            return False

    return wait_until(answers, timeout=15)


@pytest.fixture
def ollama_on_path(tmp_path: Path) -> dict[str, str]:
    """Environment whose PATH finds a symlinked copy of the fake ``ollama`` (run from outside the repo)."""
    (tmp_path / "ollama").symlink_to(REPO / "tests" / "fakes" / "ollama")
    return {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}


def test_ollama_executable(ollama_on_path: dict[str, str], tmp_path: Path) -> None:
    run = {"env": ollama_on_path, "cwd": tmp_path, "capture_output": True, "text": True, "timeout": 30}
    version = subprocess.run(["ollama", "--version"], **run)
    assert (version.returncode, version.stdout) == (0, "ollama version is 0.12.0\n")
    port = _free_port()
    env = {**ollama_on_path, "OLLAMA_HOST": f"127.0.0.1:{port}"}
    server = subprocess.Popen(["ollama", "serve"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_ready(f"http://127.0.0.1:{port}/")
        taken = subprocess.run(["ollama", "serve"], **{**run, "env": env})
        assert taken.returncode == 1
        assert taken.stderr.strip() == f"Error: listen tcp 127.0.0.1:{port}: bind: address already in use"
    finally:
        server.send_signal(signal.SIGTERM)
        _, log = server.communicate(timeout=15)
    assert server.returncode == 0
    assert f'msg="Listening on 127.0.0.1:{port} (version 0.12.0)"' in log


def test_standalone_module() -> None:
    port = _free_port()
    command = [sys.executable, "-m", "tests.fakes.fake_ollama", "--port", str(port), "--token-delay", "0.01"]
    server = subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        assert _wait_ready(f"http://127.0.0.1:{port}/")
        with ollama.Client(host=f"http://127.0.0.1:{port}") as client:
            assert client.chat("llama3.2", messages=USER).done
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
    assert server.returncode == 0
