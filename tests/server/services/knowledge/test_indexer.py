"""Indexing jobs: claimed by one worker (a conditional UPDATE), progress after every batch, a cancel stops
the job at its next batch, a dead worker's claim is taken over, and chunks are shared per file and model."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from server.db.base import utcnow
from server.db.models import KnowledgeChunk, KnowledgeDocument, User
from server.db.session import session_scope
from server.runtime import Runtime
from server.services.knowledge import collections as collections_service
from server.services.knowledge import embedding, indexer
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.server.conftest import bearer
from tests.server.test_knowledge import EMBED, make_collection, model_id, settle, upload

TEXT = " ".join(f"Sentence {i} tells of the lighthouse number {i}." for i in range(120))


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
def settings(make_settings: Callable[..., Settings], fake: FakeOllama) -> Settings:
    return make_settings(
        ollama_url=fake.url, knowledge_chunk_chars=300, knowledge_chunk_overlap=40, knowledge_embed_batch=4
    )


def runtime_of(client: TestClient) -> Runtime:
    return client.app.state.runtime


def doc_state(runtime: Runtime, collection_id: str) -> list[KnowledgeDocument]:
    with session_scope(runtime.session_factory) as session:
        docs = session.scalars(
            select(KnowledgeDocument).where(KnowledgeDocument.collection_id == uuid.UUID(collection_id))
        ).all()
        session.expunge_all()
        return list(docs)


def chunk_count(runtime: Runtime) -> int:
    with session_scope(runtime.session_factory) as session:
        return session.scalar(select(func.count()).select_from(KnowledgeChunk)) or 0


def queue(client: TestClient, token: str, collection_id: str, file_ids: list[str]) -> None:
    # Queue without the background loop, so the test drives the job itself.
    runtime = runtime_of(client)
    original = indexer.kick
    indexer.kick = lambda rt: None  # type: ignore[assignment,return-value]
    try:
        r = client.post(
            f"/api/knowledge/{collection_id}/documents", json={"file_ids": file_ids}, headers=bearer(token)
        )
        assert r.status_code == 202, r.text
    finally:
        indexer.kick = original
    assert all(d.status == "queued" for d in doc_state(runtime, collection_id))


@pytest.fixture
def setup(client: TestClient, admin_token: str, user_token: str) -> tuple[str, str]:
    collection = make_collection(client, user_token, model_id(client, admin_token, EMBED))
    file_id = upload(client, user_token, "lighthouses.txt", TEXT)
    queue(client, user_token, collection["id"], [file_id])
    return collection["id"], file_id


def test_progress_is_written_after_every_batch(
    client: TestClient, setup: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_of(client)
    collection_id, _ = setup
    seen: list[tuple[str, float]] = []
    original = embedding.embed_texts

    async def watching(*args, **kwargs) -> np.ndarray:
        doc = doc_state(runtime, collection_id)[0]
        seen.append((doc.status, doc.progress))
        return await original(*args, **kwargs)

    monkeypatch.setattr(embedding, "embed_texts", watching)
    doc_id = doc_state(runtime, collection_id)[0].id
    assert client.portal.call(indexer.index_document, runtime, doc_id) == "ready"
    doc = doc_state(runtime, collection_id)[0]
    assert doc.status == "ready" and doc.progress == 1.0 and doc.chunk_count == chunk_count(runtime)
    assert len(seen) == -(-doc.chunk_count // 4) > 3  # batches of 4
    assert all(status == "indexing" for status, _ in seen)
    progress = [p for _, p in seen]
    assert progress[0] == 0.0 and progress == sorted(progress) and progress[-1] < 1.0


def cancel(runtime: Runtime, collection_id: str) -> dict:
    """What POST /api/knowledge/{id}/cancel does, called from inside the job under test."""
    with session_scope(runtime.session_factory) as session:
        user = session.scalars(select(User).where(User.email == "user@example.com")).one()
        return collections_service.cancel(session, user, uuid.UUID(collection_id))


def test_cancel_stops_the_job_at_its_next_batch(
    client: TestClient, user_token: str, setup: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtime_of(client)
    collection_id, _ = setup
    calls = 0
    original = embedding.embed_texts

    async def cancelling(*args, **kwargs) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 2:  # the user presses cancel while the second batch is being embedded
            summary = await anyio.to_thread.run_sync(cancel, runtime, collection_id)
            assert summary["status"] != "indexing"
        return await original(*args, **kwargs)

    monkeypatch.setattr(embedding, "embed_texts", cancelling)
    doc_id = doc_state(runtime, collection_id)[0].id
    assert client.portal.call(indexer.index_document, runtime, doc_id) == "cancelled"
    assert calls == 2
    assert doc_state(runtime, collection_id)[0].status == "cancelled"
    assert chunk_count(runtime) == 0  # the partial chunks are gone
    # Added again: queued and indexed from the start.
    monkeypatch.setattr(embedding, "embed_texts", original)
    docs = client.get(f"/api/knowledge/{collection_id}/documents", headers=bearer(user_token)).json()
    assert docs[0]["status"] == "cancelled"
    r = client.post(
        f"/api/knowledge/{collection_id}/documents",
        json={"file_ids": [docs[0]["file_id"]]},
        headers=bearer(user_token),
    )
    assert r.status_code == 202
    settle(client)
    assert doc_state(runtime, collection_id)[0].status == "ready"


def test_one_worker_claims_a_document_and_a_dead_workers_claim_is_taken_over(
    client: TestClient, setup: tuple[str, str]
) -> None:
    runtime = runtime_of(client)
    collection_id, _ = setup
    doc_id = doc_state(runtime, collection_id)[0].id
    assert indexer._claim(runtime, doc_id) is True
    assert indexer._claim(runtime, doc_id) is False  # another worker finds it taken
    assert client.portal.call(indexer.index_document, runtime, doc_id) == "not_claimed"
    # The claimer died: its claim goes stale and another worker takes it over.
    with session_scope(runtime.session_factory) as session:
        session.execute(
            update(KnowledgeDocument)
            .where(KnowledgeDocument.id == doc_id)
            .values(claimed_at=utcnow() - timedelta(seconds=indexer.STALE_SECONDS + 1))
        )
    assert client.portal.call(indexer.run_pending, runtime) == 1
    assert doc_state(runtime, collection_id)[0].status == "ready"


def test_a_file_in_two_collections_is_chunked_once_per_model(
    client: TestClient, admin_token: str, user_token: str, setup: tuple[str, str], fake: FakeOllama
) -> None:
    runtime = runtime_of(client)
    collection_id, file_id = setup
    client.portal.call(indexer.run_pending, runtime)
    chunks = chunk_count(runtime)
    embedded = len(fake.embedded)
    second = make_collection(client, user_token, model_id(client, admin_token, EMBED), name="Second")
    queue(client, user_token, second["id"], [file_id])
    client.portal.call(indexer.run_pending, runtime)
    assert doc_state(runtime, second["id"])[0].status == "ready"
    assert chunk_count(runtime) == chunks and len(fake.embedded) == embedded  # reused, not re-embedded
    # Removing it from one collection keeps the chunks the other still uses; from both, drops them.
    assert (
        client.delete(
            f"/api/knowledge/{collection_id}/documents/{file_id}", headers=bearer(user_token)
        ).status_code
        == 204
    )
    assert chunk_count(runtime) == chunks
    assert client.delete(f"/api/knowledge/{second['id']}", headers=bearer(user_token)).status_code == 204
    assert chunk_count(runtime) == 0


def test_an_embedding_failure_marks_the_document_in_error(
    client: TestClient, user_token: str, setup: tuple[str, str], fake: FakeOllama
) -> None:
    runtime = runtime_of(client)
    collection_id, _ = setup
    fake.busy = True  # every /api/embed answers 503
    client.portal.call(indexer.run_pending, runtime)
    doc = doc_state(runtime, collection_id)[0]
    assert doc.status == "error" and doc.error and "embedding model failed" in doc.error
    assert "lighthouse" not in doc.error  # no document text in the error
    assert chunk_count(runtime) == 0
    summary = client.get(f"/api/knowledge/{collection_id}", headers=bearer(user_token)).json()
    assert summary["status"] == "error"


def test_work_queued_before_a_restart_is_resumed_at_start_up(
    client: TestClient, settings: Settings, setup: tuple[str, str]
) -> None:
    from server.app import create_app

    collection_id, _ = setup  # queued, and no loop ran (as if the process had stopped right then)
    again = create_app(settings)
    with TestClient(again) as restarted:
        assert restarted.portal is not None
        restarted.portal.call(indexer.wait_idle, again.state.runtime)
        docs = doc_state(again.state.runtime, collection_id)
    assert [d.status for d in docs] == ["ready"]
    assert docs[0].chunk_count and docs[0].chunk_count > 1
