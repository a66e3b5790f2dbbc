"""Another user's ids, everywhere the API takes one (docs/security.md, C1), generated from the OpenAPI
document: every operation with an id in its path, and every request body with a field that names one of
the victim's objects (a conversation, a parent message, attached files, knowledge collections), is called
by a second, ordinary user with the victim's ids. Each answers 404 (the object does not exist for them) or
403 (an administrator's route), never 2xx, and the victim's data is unchanged.

A new operation with an id parameter this sweep does not know fails the test: the sweep must be taught
which object the parameter names."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.db.base import Base
from server.services import models as models_service
from server.services.knowledge import indexer
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.server.chat_support import parse_sse
from tests.server.conftest import bearer

#: Tables of bookkeeping the intruder's own requests write (sign-in, throttling, audit, usage, limits):
#: not the victim's data.
BOOKKEEPING = re.compile(
    r"^(audit_entries|refresh_tokens|login_throttle.*|usage_.*|limit_.*|app_settings|cluster_.*)$"
)
#: Path parameters that name no object of a user (Ollama model names, a limit's kind, /v1's model).
NOT_OWNED = {"name", "kind", "model_id"}
#: Request-body fields that name the victim's objects.
BODY_FIELDS = ("conversation_id", "parent_id", "attachments", "knowledge", "file_ids")


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(reply="A secret answer.") as server:
        yield server


@pytest.fixture
def settings(make_settings: Callable[..., Settings], fake: FakeOllama) -> Settings:
    return make_settings(ollama_url=fake.url, chat_title_generation=False)


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _sample(doc: dict[str, Any], schema: dict[str, Any], ids: dict[str, Any], name: str = "") -> Any:
    """A minimal valid value for ``schema``; the victim's ids in the fields that name them."""
    if name in ids:
        return ids[name]
    schema = _resolve(doc, schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(doc, s).get("type") != "null"]
            return _sample(doc, options[0], ids, name)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        wanted = set(schema.get("required", [])) | {k for k in props if k in ids}
        return {k: _sample(doc, props[k], ids, k) for k in props if k in wanted}
    if kind == "array":
        return [_sample(doc, schema["items"], ids)] * schema.get("minItems", 0)
    if kind == "string":
        if schema.get("format") == "uuid":
            return str(uuid.uuid4())
        if schema.get("format") == "email":
            return "someone@example.com"
        return "x" * max(1, schema.get("minLength", 1))
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 1
    if kind == "boolean":
        return False
    return None


def _victims_data(client: TestClient) -> dict[str, list[tuple]]:
    with client.app.state.runtime.session_factory() as s:
        return {
            name: sorted(tuple(str(v) for v in row) for row in s.execute(select(table)))
            for name, table in Base.metadata.tables.items()
            if not BOOKKEEPING.match(name)
        }


def test_another_users_ids_are_404_or_403_everywhere(
    client: TestClient, admin_token: str, create_user: Callable[..., str]
) -> None:
    victim = create_user("victim@example.com")
    v = bearer(victim)
    provider = client.get("/api/providers", headers=bearer(admin_token)).json()["items"][0]["id"]
    chat_model = models_service.ollama_model_id(uuid.UUID(provider), "llama3.2:latest")
    embedder = models_service.ollama_model_id(uuid.UUID(provider), "nomic-embed-text:latest")

    # The victim's objects: a chat, a file, a personal preset, a collection holding the file, an API key.
    r = client.post("/api/chat", json={"model": chat_model, "content": "secret plans"}, headers=v)
    assert r.status_code == 200, r.text
    meta = parse_sse(r.text)[0][0].data
    up = client.post(
        "/api/files", files={"file": ("plans.txt", b"the secret plans", "text/plain")}, headers=v
    )
    assert up.status_code == 201, up.text
    file_id = up.json()["id"]
    preset = client.post("/api/model-configs", json={"name": "Mine", "base_model_id": chat_model}, headers=v)
    assert preset.status_code == 201, preset.text
    coll = client.post("/api/knowledge", json={"name": "Plans", "embedding_model": embedder}, headers=v)
    assert coll.status_code == 201, coll.text
    collection = coll.json()["id"]
    added = client.post(f"/api/knowledge/{collection}/documents", json={"file_ids": [file_id]}, headers=v)
    assert added.status_code == 202, added.text
    key = client.post("/api/keys", json={"name": "victim's key"}, headers=v)
    assert key.status_code == 201, key.text
    client.portal.call(indexer.wait_idle, client.app.state.runtime)
    victim_id = next(
        u["id"]
        for u in client.get("/api/users", headers=bearer(admin_token)).json()["items"]
        if u["email"] == "victim@example.com"
    )
    path_ids = {
        "conversation_id": meta["conversation_id"],
        "message_id": meta["assistant_message_id"],
        "file_id": file_id,
        "config_id": preset.json()["id"],
        "collection_id": collection,
        "key_id": key.json()["id"],
        "user_id": victim_id,
        "provider_id": provider,  # administrators' objects: 403 for an ordinary user
        "backup_id": str(uuid.uuid4()),
        "channel_id": str(uuid.uuid4()),
        "route_id": str(uuid.uuid4()),
    }
    body_ids = {
        "conversation_id": meta["conversation_id"],
        "parent_id": meta["assistant_message_id"],
        "attachments": [file_id],
        "knowledge": [collection],
        "file_ids": [file_id],
    }

    intruder = bearer(create_user("intruder@example.com"))
    before = _victims_data(client)
    doc = client.app.openapi()
    swept: list[str] = []
    for path, operations in doc["paths"].items():
        params = re.findall(r"{([^}:]+)(?::[^}]*)?}", path)
        for method, op in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            unknown = set(params) - set(path_ids) - NOT_OWNED
            assert not unknown, f"teach the sweep which object {unknown} of {method.upper()} {path} names"
            schema = (
                (op.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema")
            )
            base = _sample(doc, schema, {}) if schema else None
            props = set(_resolve(doc, schema).get("properties", {})) if schema else set()
            # One call per victim's id: in the path, or in one body field (the rest of the body valid).
            bodies: list[Any] = []
            if set(params) & set(path_ids):
                bodies.append(base)
            bodies += [{**(base or {}), field: body_ids[field]} for field in BODY_FIELDS if field in props]
            if not bodies or set(params) & NOT_OWNED:
                continue
            url = re.sub(r"{([^}:]+)(?::[^}]*)?}", lambda m: str(path_ids.get(m.group(1), "")), path)
            for body in bodies:
                if isinstance(body, dict) and "model" in body:
                    body["model"] = chat_model
                r = client.request(method.upper(), url, json=body, headers=intruder)
                swept.append(f"{method.upper()} {path} {sorted(set(body or {}) & set(BODY_FIELDS))}")
                assert r.status_code in (403, 404), (method, url, body, r.status_code, r.text[:300])
                code = r.json()["code"]
                assert code.endswith("_not_found") or r.status_code == 403, (method, url, code)
    # The intruder's own objects with the victim's in the body: a collection adding the victim's file, a
    # chat with the victim's personal preset as its model.
    own = client.post("/api/knowledge", json={"name": "Mine", "embedding_model": embedder}, headers=intruder)
    assert own.status_code == 201, own.text
    r = client.post(
        f"/api/knowledge/{own.json()['id']}/documents", json={"file_ids": [file_id]}, headers=intruder
    )
    assert r.status_code == 404 and r.json()["code"] == "file_not_found", r.text
    r = client.post(
        "/api/chat", json={"model": f"cfg:{preset.json()['id']}", "content": "x"}, headers=intruder
    )
    assert r.status_code == 404 and r.json()["code"].endswith("not_found"), r.text
    # Every kind of object was tried, through the operations that take it.
    assert len(swept) >= 50, swept
    assert {
        "POST /api/chat ['conversation_id']",
        "POST /api/chat ['parent_id']",
        "POST /api/chat ['attachments']",
        "POST /api/chat ['knowledge']",
        "POST /api/chat/{message_id}/regenerate []",
        "POST /api/chat/{message_id}/regenerate ['attachments']",
        "DELETE /api/files/{file_id} []",
    } <= set(swept), swept
    # Nothing of the victim's changed; the intruder's own collection is the only new row.
    after = _victims_data(client)
    new_rows = {t: set(after[t]) - set(before[t]) for t in after if set(after[t]) != set(before[t])}
    assert list(new_rows) == ["knowledge_collections"] and len(new_rows["knowledge_collections"]) == 1, (
        new_rows
    )
    assert all(set(before[t]) <= set(after[t]) for t in before)
    # The victim still has everything.
    assert client.get(f"/api/conversations/{meta['conversation_id']}", headers=v).status_code == 200
    assert client.get(f"/api/files/{file_id}", headers=v).status_code == 200
    assert client.get(f"/api/knowledge/{collection}", headers=v).status_code == 200
