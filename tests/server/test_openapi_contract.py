"""The OpenAPI document tells the truth: schemathesis, every check, against a live server.

A real uvicorn on loopback serves the app (lifespan included) with the fake Ollama as its upstream; the
schemathesis command line fuzzes every operation from ``/api/openapi.json`` with a fixed seed and a bounded
number of examples per operation, once signed in as an administrator and once as a plain user, and the
test fails on any finding (a 5xx, a status or header the document does not list, a body that does not
match its schema, a schema-valid request refused, an invalid one accepted...).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.api.paging import MAX_OFFSET, MAX_PAGE
from server.api.router import PUBLIC_ROUTES
from server.app import create_app
from server.schemas.common import MODEL_NAME_PATTERN
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.server.chat_support import LiveServer, live_server
from tests.server.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, INITIAL_PASSWORD, USER_PASSWORD, bearer

SEED = int(os.environ.get("MODELTRAIN_CONTRACT_SEED", "19"))
#: Examples per operation and phase (the coverage phase adds its own cases): about a minute per role here.
MAX_EXAMPLES = int(os.environ.get("MODELTRAIN_CONTRACT_EXAMPLES", "10"))

#: Operations left out of the fuzz run, each with the reason. Everything else is fuzzed.
EXCLUDED: dict[tuple[str, str], str] = {
    ("POST", "/api/backups/{backup_id}/restore"): "replaces the whole database, restarts the services",
    ("POST", "/api/backups/upload-restore"): "replaces the whole database with an upload (as above)",
    ("PUT", "/api/lan"): "opens or closes a listening socket on the machine's network interfaces",
    ("POST", "/api/ollama/runtime/install"): "downloads and installs the Ollama runtime from the internet",
    ("POST", "/api/ollama/runtime/update"): "downloads and replaces the Ollama runtime (as above)",
    ("POST", "/api/ollama/start"): "starts a local `ollama serve` process on the machine",
    ("POST", "/api/ollama/stop"): "stops the Ollama process the machine runs",
    ("POST", "/api/ollama/restart"): "stops and starts the Ollama process the machine runs",
    ("POST", "/api/auth/logout"): "signs the fuzzing session itself out: every later request is a 401",
    ("POST", "/api/auth/password"): "a changed password revokes the fuzzing session's tokens",
}

#: Operations whose schema-valid requests may still be refused with a 422, for a rule no JSON Schema can
#: state (the current time, references between the items of a body, a password policy, a file's contents,
#: where a host resolves, what is stored). Schemathesis' ``positive_data_acceptance`` check accepts a 422
#: from these, and only these; every other constraint the server enforces is in the document (patterns,
#: lengths, bounds, enums, JSON types).
BUSINESS_RULES: dict[tuple[str, str], str] = {
    ("POST", "/api/keys"): "`expires_at` must lie in the future (expiry_in_past)",
    ("POST", "/api/conversations/import"): "messages form a tree within a conversation (invalid_import)",
    ("POST", "/api/model-configs"): "`base_model_id`, or `provider_id` and `model`, not both",
    ("PATCH", "/api/model-configs/{config_id}"): "as POST /api/model-configs",
    (
        "POST",
        "/api/ollama/models/create",
    ): "a base model (`from`) or a Modelfile, and a Modelfile that parses",
    ("POST", "/api/ollama/models/import"): "the body must be a GGUF file (not_gguf)",
    ("POST", "/api/routes"): "each target names an existing provider (provider_not_found)",
    ("POST", "/api/users"): "the password policy: MODELTRAIN_PASSWORD_MIN_LENGTH, not common, not the e-mail",
    ("POST", "/api/users/{user_id}/password"): "the password policy (as POST /api/users)",
    ("POST", "/api/auth/desktop/password"): "the password policy (as POST /api/users)",
    ("POST", "/api/alerts/channels"): "a webhook URL the server may call, a complete SMTP setup",
    ("POST", "/api/providers"): "the base URL's host resolves to an address the policy allows (security D3)",
    ("PATCH", "/api/providers/{provider_id}"): "as POST /api/providers",
    ("POST", "/api/files"): "the file's content: a supported type, not empty, not damaged (file_empty...)",
    ("POST", "/api/chat"): "a model given or recorded on the conversation (model_required)",
    ("POST", "/api/chat/{message_id}/regenerate"): "as POST /api/chat",
    ("GET", "/api/usage"): "`from` not after `to` (usage_range_invalid)",
    ("GET", "/api/usage.csv"): "as GET /api/usage",
}
SKIP = "x-contract-excluded"


def _signed_in(base: str) -> tuple[str, str]:
    """Replace the first admin's initial password, create a plain user; the two access tokens."""
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.post("/api/auth/login", json={"email": ADMIN_EMAIL, "password": INITIAL_PASSWORD})
        assert r.status_code == 200, r.text
        r = c.post(
            "/api/auth/password",
            json={"current_password": INITIAL_PASSWORD, "new_password": ADMIN_PASSWORD},
            headers={"Authorization": f"Bearer {r.json()['access_token']}"},
        )
        assert r.status_code == 200, r.text
        admin = r.json()["access_token"]
        r = c.post(
            "/api/users",
            json={"email": "user@example.com", "password": USER_PASSWORD, "role": "user"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 201, r.text
        r = c.post("/api/auth/login", json={"email": "user@example.com", "password": USER_PASSWORD})
        assert r.status_code == 200, r.text
        return admin, r.json()["access_token"]


@pytest.fixture
def contract_settings(make_settings, tmp_path: Path) -> Iterator[Settings]:
    with FakeOllama(pull_tick=0.01) as fake:
        (tmp_path / "models").mkdir()
        yield make_settings(
            api_docs=True,
            ollama_url=fake.url,
            ollama_models_dir=tmp_path / "models",
            ollama_autostart=False,
            chat_title_generation=False,
            login_max_failures=1_000_000,
        )


@pytest.fixture
def server(contract_settings: Settings) -> Iterator[LiveServer]:
    app: FastAPI = create_app(contract_settings)
    with live_server(app) as live:
        yield live


def fuzzed_schema(base: str, into: Path) -> Path:
    """The server's own document as a file for the command line, the excluded operations marked (they
    stay in it: a method the document lists is not "undeclared" for the checks of the others)."""
    schema = httpx.get(f"{base}/api/openapi.json", timeout=30).json()
    for method, path in EXCLUDED:
        operation = schema["paths"].get(path, {}).get(method.lower())
        assert operation is not None, f"excluded operation {method} {path} is gone"
        operation[SKIP] = True
    into.write_text(json.dumps(schema))
    return into


def config_file(into: Path) -> Path:
    """schemathesis.toml: the business-rule operations' 422 counts as an accepted answer."""
    accepted = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
    blocks = [
        f'[[operations]]\ninclude-name = "{method} {path}"\n'
        f"checks.positive_data_acceptance.expected-statuses = {json.dumps(accepted)}\n"
        for method, path in BUSINESS_RULES
    ]
    into.write_text("\n".join(blocks))
    return into


def run_schemathesis(base: str, token: str, workdir: Path) -> tuple[int, str]:
    """Run the schemathesis CLI; its exit status and its output (every event is in report.ndjson)."""
    report = workdir / "report.ndjson"
    args = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config_file(workdir / "schemathesis.toml")),
        "run",
        str(fuzzed_schema(base, workdir / "openapi.json")),
        "--url",
        base,
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",  # one: deterministic for the seed (and CPython 3.11's ast is not thread-safe for it)
        "1",
        "--no-shrink",
        "--continue-on-failure",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "30",
        "--header",
        f"Authorization: Bearer {token}",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        "--output-truncate",
        "false",
        "--warnings",
        "off",
        "--generation-database",
        "none",
        "--exclude-by",
        f"/{SKIP} == true",
    ]
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=900, env={**os.environ, "NO_COLOR": "1"}
    )
    return done.returncode, done.stdout + done.stderr


# --- the document itself, the bounds and 405 (fast: a TestClient, no fuzzing) ------------------------------


@pytest.fixture
def document(make_settings) -> dict[str, Any]:
    return create_app(make_settings(api_docs=True)).openapi()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def test_errors_are_documented_with_the_shape_the_server_sends(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's, never sent
    assert schemas["Error"]["required"] == ["code", "message", "detail"]
    assert "FieldError" in json.dumps(schemas["ValidationError"])
    for method, path, operation in operations(document):
        responses = operation["responses"]
        errors = {int(s) for s in responses if int(s) >= 400}
        assert 403 in errors, (method, path)  # the network guard can refuse any request
        for status in errors:
            ref = responses[str(status)]["content"]["application/json"]["schema"]["$ref"]
            expected = (
                "OpenAIError" if path.startswith("/v1/") else "ValidationError" if status == 422 else "Error"
            )
            assert ref.endswith("/" + expected), (method, path, status)
        if (method, path) not in PUBLIC_ROUTES:
            assert {401, 403} <= errors, (method, path)
        if "{" in path:
            assert 404 in errors, (method, path)
        if "requestBody" in operation:
            assert {400, 413} <= errors, (method, path)


def test_declared_errors_appear(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert {"401", "429"} <= set(paths["/api/auth/login"]["post"]["responses"])
    assert "409" in paths["/api/providers/{provider_id}"]["delete"]["responses"]
    assert "Retry-After" in paths["/api/auth/login"]["post"]["responses"]["429"]["headers"]


def test_streams_document_each_event_and_its_payload(document: dict[str, Any]) -> None:
    for method, path, names in [
        ("post", "/api/chat", {"meta", "delta", "done", "error", "title"}),
        ("post", "/api/chat/{message_id}/regenerate", {"meta", "delta", "done", "error", "title"}),
        ("post", "/api/ollama/pull", {"progress", "done", "error"}),
        ("get", "/api/ollama/pulls/{name}/events", {"progress", "done", "error"}),
        ("post", "/api/ollama/runtime/install", {"progress", "done", "error"}),
        ("post", "/api/ollama/models/import", {"progress", "done", "error"}),
    ]:
        stream = document["paths"][path][method]["responses"]["200"]["content"]["text/event-stream"]["schema"]
        events = {v["properties"]["event"]["const"]: v["properties"]["data"] for v in stream["oneOf"]}
        assert set(events) == names, path
        for data in events.values():
            assert data["contentMediaType"] == "application/json"
            assert data["contentSchema"]["$ref"].split("/")[-1] in document["components"]["schemas"]


def test_model_name_grammar_in_the_schema_is_the_servers() -> None:
    from server.providers.model_names import is_valid_model_name

    pattern = re.compile(MODEL_NAME_PATTERN)
    samples = [
        "llama3.2",
        "llama3.2:1b",
        "library/llama3.2:latest",
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        "localhost:5000/team/model:v1",
        "a..b",
        ".hidden",
        "-x",
        "x/",
        "a:b:c",
        "é",
        "has space",
        "",
        "x" * 81,
        "a/b/c/d",
    ]
    for name in samples:  # the services also refuse "..", which the pattern states too
        expected = is_valid_model_name(name) and ".." not in name
        assert bool(pattern.fullmatch(name)) == expected, name


@pytest.mark.parametrize(
    "path",
    [
        "/api/users?page=11926758936405127168",
        "/api/providers?page=11926758936405127168",
        "/api/model-configs?page=11926758936405127168",
        "/api/conversations?page=11926758936405127168",
        "/api/conversations/search?q=x&page=11926758936405127168",
        "/api/audit?offset=11926758936405127168",
        f"/api/users?page={MAX_PAGE + 1}",
        f"/api/audit?offset={MAX_OFFSET + 1}",
    ],
)
def test_paging_is_bounded(client: TestClient, admin_token: str, path: str) -> None:
    r = client.get(path, headers=bearer(admin_token))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_input"


def test_the_last_page_is_served(client: TestClient, admin_token: str) -> None:
    r = client.get(f"/api/users?page={MAX_PAGE}&size=200", headers=bearer(admin_token))
    assert r.status_code == 200 and r.json()["items"] == []


def test_method_not_allowed_says_which_are(client: TestClient, admin_token: str) -> None:
    h = bearer(admin_token)
    for method, path, allowed in [
        ("TRACE", "/api/ollama/pulls", {"GET"}),
        ("GET", "/api/auth/login", {"POST"}),
        ("PUT", "/api/users/me", {"GET", "PATCH"}),
        ("DELETE", "/api/users/me", {"GET", "PATCH"}),  # "me" is no user id for DELETE /api/users/{user_id}
        ("PATCH", "/api/conversations/import", {"POST"}),
        ("PUT", "/api/ollama/models/copy", {"POST"}),  # not {name:path}'s GET and DELETE
        ("DELETE", "/api/audit", {"GET"}),
    ]:
        r = client.request(method, path, headers=h)
        assert r.status_code == 405, (method, path, r.status_code)
        assert r.json()["code"] == "method_not_allowed"
        assert set(r.headers["allow"].split(", ")) == allowed, (method, path)
    r = client.request("TRACE", "/v1/models", headers=h)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in r.headers["allow"]
    assert client.post("/api/no-such-thing", headers=h).status_code == 404


def test_a_value_the_database_refuses_is_invalid_input(client: TestClient, admin_token: str) -> None:
    # PostgreSQL text cannot hold NUL: its driver refuses the query (SQLite just finds nothing)
    r = client.get("/api/audit", params={"target_kind": "a\x00b"}, headers=bearer(admin_token))
    assert r.status_code in (200, 422), r.text
    assert r.status_code == 200 or r.json()["code"] == "invalid_input"


def test_request_scalars_take_their_json_type_only(client: TestClient, admin_token: str) -> None:
    h = bearer(admin_token)
    r = client.put("/api/keys/settings", json={"user_creation": 0}, headers=h)
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"
    assert client.put("/api/keys/settings", json={"user_creation": False}, headers=h).status_code == 200
    for query in ("to=0", "to=0.5", "from=1700000000"):
        assert client.get(f"/api/usage?{query}", headers=h).status_code == 422, query
        assert client.get(f"/api/audit?{query}", headers=h).status_code == 422, query
    assert client.get("/api/usage?to=2026-01-02", headers=h).status_code == 200
    for query in ("to=0001-01-02", "to=9999-12-31&granularity=raw", "from=0001-01-01&to=9999-12-31"):
        assert client.get(f"/api/usage?{query}", headers=h).status_code == 200, query  # no date overflow


@pytest.mark.timeout(900)
@pytest.mark.parametrize("role", ["admin", "user"])
def test_schemathesis_finds_nothing(server: LiveServer, role: str, tmp_path: Path) -> None:
    admin, user = _signed_in(server.url)
    rc, output = run_schemathesis(server.url, admin if role == "admin" else user, tmp_path)
    assert rc == 0, f"{output[-20000:]}\n(every request and answer: {tmp_path / 'report.ndjson'})"
    selected, tested = re.search(r"Selected: (\d+)/\d+", output), re.search(r"Tested: (\d+)", output)
    assert selected and tested and selected[1] == tested[1], output[-5000:]  # every operation ran
