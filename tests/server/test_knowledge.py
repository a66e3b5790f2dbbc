"""/api/knowledge: collections of uploaded documents, indexed in the background (progress, cancel, re-index
on a new embedding model), searched by vectors and full text; private to their owner unless an admin shares
them (read-only for the others). Runs on SQLite and, under MODELTRAIN_TEST_POSTGRES=1, on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from server.db import sqlite_vec
from server.db.session import session_scope
from server.services import models as models_service
from server.services.knowledge import index, indexer
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama, default_models
from tests.server.conftest import bearer
from tests.server.services.knowledge.corpus import generate

EMBED = "nomic-embed-text:latest"
OTHER_EMBED = "mxbai-embed-large:latest"


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    models = {
        **default_models(),
        OTHER_EMBED: {"family": "bert", "capabilities": ("embedding",), "embedding_length": 1024},
    }
    with FakeOllama(models=models) as server:
        yield server


@pytest.fixture
def settings(make_settings: Callable[..., Settings], fake: FakeOllama) -> Settings:
    return make_settings(ollama_url=fake.url, knowledge_chunk_chars=500, knowledge_chunk_overlap=80)


@pytest.fixture(params=["index", "matrix"])
def vector_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where SQLite searches vectors: sqlite-vec's index, or the fallback where it cannot be registered,
    a matrix in process (PostgreSQL runs its own path under both)."""
    if request.param == "matrix":
        monkeypatch.setattr(sqlite_vec, "available", lambda: False)
    return request.param


def model_id(client: TestClient, token: str, name: str) -> str:
    providers = client.get("/api/providers", headers=bearer(token)).json()["items"]
    return models_service.ollama_model_id(uuid.UUID(providers[0]["id"]), name)


def upload(client: TestClient, token: str, name: str, text: str) -> str:
    r = client.post("/api/files", files={"file": (name, text.encode(), "text/plain")}, headers=bearer(token))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def settle(client: TestClient) -> None:
    """Wait for this process's indexing loop to finish (no sleeping)."""
    portal = client.portal
    assert portal is not None
    portal.call(indexer.wait_idle, client.app.state.runtime)


def make_collection(client: TestClient, token: str, embedding_model: str, name: str = "Atlas") -> dict:
    r = client.post(
        "/api/knowledge",
        json={"name": name, "description": "places", "embedding_model": embedding_model},
        headers=bearer(token),
    )
    assert r.status_code == 201, r.text
    return r.json()


def search(client: TestClient, token: str, collection_id: str, query: str, limit: int = 3):
    return client.post(
        f"/api/knowledge/{collection_id}/search", json={"query": query, "limit": limit}, headers=bearer(token)
    )


def test_a_collection_indexes_its_documents_and_finds_the_right_passage(
    client: TestClient, admin_token: str, user_token: str, fake: FakeOllama, vector_store: str
) -> None:
    texts, facts = generate(documents=8, places_per_document=4)
    assert len(facts) >= 30
    embed = model_id(client, admin_token, EMBED)
    collection = make_collection(client, user_token, embed)
    assert (
        collection["status"] == "empty" and collection["writable"] is True and collection["shared"] is False
    )
    file_ids = [upload(client, user_token, f"atlas-{i}.txt", text) for i, text in enumerate(texts)]
    r = client.post(
        f"/api/knowledge/{collection['id']}/documents",
        json={"file_ids": file_ids},
        headers=bearer(user_token),
    )
    assert r.status_code == 202, r.text
    assert {d["status"] for d in r.json()} <= {"queued", "indexing", "ready"}
    settle(client)
    docs = client.get(f"/api/knowledge/{collection['id']}/documents", headers=bearer(user_token)).json()
    assert len(docs) == 8 and all(d["status"] == "ready" and d["progress"] == 1.0 for d in docs)
    assert all(d["chunk_count"] > 1 and d["error"] is None for d in docs)
    summary = client.get(f"/api/knowledge/{collection['id']}", headers=bearer(user_token)).json()
    assert summary["status"] == "ready" and summary["document_count"] == 8
    assert summary["chunk_count"] == sum(d["chunk_count"] for d in docs)
    # Embedded in batches through the provider, with the collection's model.
    assert fake.embedded and {model for model, _ in fake.embedded} == {EMBED}
    # Retrieval quality on the labelled questions: the right passage in the top 3 for >= 90 %.
    hits = 0
    for fact in facts:
        r = search(client, user_token, collection["id"], fact.question)
        assert r.status_code == 200, r.text
        passages = r.json()
        assert [p["number"] for p in passages] == list(range(1, len(passages) + 1))
        hits += any(fact.answer in p["text"] for p in passages)
    assert hits / len(facts) >= 0.9, f"{hits}/{len(facts)}"
    top = search(client, user_token, collection["id"], facts[0].question).json()[0]
    assert top["collection_id"] == collection["id"] and top["file_name"].startswith("atlas-")
    assert top["page"] is None and top["score"] > 0
    # Where the vectors are searched: pgvector's HNSW index on PostgreSQL, sqlite-vec's vec0 table on
    # SQLite, a matrix in process only in the fallback.
    runtime = client.app.state.runtime
    with session_scope(runtime.session_factory) as session:
        on_postgres = session.get_bind().dialect.name == "postgresql"
        assert index.uses_pgvector(runtime, session) is on_postgres
        in_process = not on_postgres and vector_store == "matrix"
        assert index.uses_matrix(runtime, session) is in_process
        assert (index.vector_cache(runtime).peek(embed) is not None) is in_process
        if not on_postgres:
            vec_tables = session.execute(
                text("SELECT count(*) FROM sqlite_master WHERE name = 'knowledge_vec_768'")
            ).scalar_one()
            assert vec_tables == (0 if in_process else 1)
        if on_postgres:
            stored = session.execute(text("SELECT count(embedding_vec) FROM knowledge_chunks")).scalar_one()
            assert stored == summary["chunk_count"]
            names = session.execute(
                text("SELECT indexname FROM pg_indexes WHERE tablename = 'knowledge_chunks'")
            )
            assert "ix_knowledge_chunks_hnsw_768" in set(names.scalars())


def test_collections_are_private_unless_an_admin_shares_them(
    client: TestClient, admin_token: str, user_token: str, create_user: Callable[..., str]
) -> None:
    other = create_user("other@example.com")
    embed = model_id(client, admin_token, EMBED)
    mine = make_collection(client, user_token, embed)
    file_id = upload(client, user_token, "notes.txt", "The lighthouse keeper logs the weather at dawn.")
    client.post(
        f"/api/knowledge/{mine['id']}/documents", json={"file_ids": [file_id]}, headers=bearer(user_token)
    )
    settle(client)
    cid = mine["id"]
    # Another user: not found, whatever they try.
    assert client.get("/api/knowledge", headers=bearer(other)).json() == []
    for method, path, body in [
        ("GET", f"/api/knowledge/{cid}", None),
        ("GET", f"/api/knowledge/{cid}/documents", None),
        ("PATCH", f"/api/knowledge/{cid}", {"name": "mine now"}),
        ("DELETE", f"/api/knowledge/{cid}", None),
        ("POST", f"/api/knowledge/{cid}/search", {"query": "lighthouse"}),
        ("POST", f"/api/knowledge/{cid}/reindex", None),
        ("POST", f"/api/knowledge/{cid}/cancel", None),
        ("DELETE", f"/api/knowledge/{cid}/documents/{file_id}", None),
    ]:
        r = client.request(method, path, json=body, headers=bearer(other))
        assert r.status_code == 404 and r.json()["code"] == "collection_not_found", (method, path, r.text)
    # Their own collection cannot take my file.
    theirs = make_collection(client, other, embed, name="Theirs")
    r = client.post(
        f"/api/knowledge/{theirs['id']}/documents", json={"file_ids": [file_id]}, headers=bearer(other)
    )
    assert r.status_code == 404 and r.json()["code"] == "file_not_found"
    # Only an admin shares.
    r = client.patch(f"/api/knowledge/{cid}", json={"shared": True}, headers=bearer(user_token))
    assert r.status_code == 403 and r.json()["code"] == "admin_only"
    r = client.patch(f"/api/knowledge/{cid}", json={"shared": True}, headers=bearer(admin_token))
    assert r.status_code == 200 and r.json()["shared"] is True
    # Shared: readable and searchable by the other user, not writable.
    listed = client.get("/api/knowledge", headers=bearer(other)).json()
    assert {c["id"]: c["writable"] for c in listed} == {cid: False, theirs["id"]: True}
    r = search(client, other, cid, "Who logs the weather?")
    assert r.status_code == 200 and "lighthouse keeper" in r.json()[0]["text"]
    for method, path, body in [
        ("PATCH", f"/api/knowledge/{cid}", {"name": "mine now"}),
        ("DELETE", f"/api/knowledge/{cid}", None),
        ("POST", f"/api/knowledge/{cid}/reindex", None),
        ("POST", f"/api/knowledge/{cid}/documents", {"file_ids": [file_id]}),
    ]:
        r = client.request(method, path, json=body, headers=bearer(other))
        assert r.status_code == 403 and r.json()["code"] == "collection_read_only", (method, path, r.text)
    # The file itself stays private.
    assert client.get(f"/api/files/{file_id}", headers=bearer(other)).status_code == 404


def test_a_new_embedding_model_re_indexes_the_collection(
    client: TestClient, admin_token: str, user_token: str, fake: FakeOllama
) -> None:
    collection = make_collection(client, user_token, model_id(client, admin_token, EMBED))
    texts, facts = generate(documents=2, places_per_document=3)
    file_ids = [upload(client, user_token, f"doc-{i}.txt", t) for i, t in enumerate(texts)]
    client.post(
        f"/api/knowledge/{collection['id']}/documents",
        json={"file_ids": file_ids},
        headers=bearer(user_token),
    )
    settle(client)
    before = client.get(f"/api/knowledge/{collection['id']}", headers=bearer(user_token)).json()
    fake.embedded.clear()
    other = model_id(client, admin_token, OTHER_EMBED)
    r = client.patch(
        f"/api/knowledge/{collection['id']}", json={"embedding_model": other}, headers=bearer(user_token)
    )
    assert r.status_code == 200 and r.json()["embedding_model"] == other
    assert r.json()["status"] == "indexing"
    settle(client)
    after = client.get(f"/api/knowledge/{collection['id']}", headers=bearer(user_token)).json()
    assert after["status"] == "ready" and after["chunk_count"] == before["chunk_count"]
    assert {model for model, _ in fake.embedded} == {OTHER_EMBED}
    fake.embedded.clear()
    found = search(client, user_token, collection["id"], facts[0].question).json()
    assert any(facts[0].answer in p["text"] for p in found)
    assert fake.embedded == [(OTHER_EMBED, [facts[0].question])]  # the query, with the new model
    # An explicit re-index embeds everything again.
    fake.embedded.clear()
    r = client.post(f"/api/knowledge/{collection['id']}/reindex", headers=bearer(user_token))
    assert r.status_code == 202
    settle(client)
    assert sum(len(inputs) for _, inputs in fake.embedded) == after["chunk_count"]


def test_errors_are_clean(client: TestClient, admin_token: str, user_token: str) -> None:
    r = client.post(
        "/api/knowledge", json={"name": "x", "embedding_model": "ollama:nope"}, headers=bearer(user_token)
    )
    assert r.status_code == 404 and r.json()["code"] == "model_not_found"
    collection = make_collection(client, user_token, model_id(client, admin_token, EMBED))
    r = client.post(
        f"/api/knowledge/{collection['id']}/documents",
        json={"file_ids": [str(uuid.uuid4())]},
        headers=bearer(user_token),
    )
    assert r.status_code == 404 and r.json()["code"] == "file_not_found"
    r = client.delete(
        f"/api/knowledge/{collection['id']}/documents/{uuid.uuid4()}", headers=bearer(user_token)
    )
    assert r.status_code == 404 and r.json()["code"] == "document_not_found"
    r = client.get(f"/api/knowledge/{uuid.uuid4()}", headers=bearer(user_token))
    assert r.status_code == 404
    assert client.delete(f"/api/knowledge/{collection['id']}", headers=bearer(user_token)).status_code == 204
    assert client.get("/api/knowledge", headers=bearer(user_token)).json() == []
