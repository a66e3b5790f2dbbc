"""The SQLite vector index (sqlite-vec): one vec0 table per dimension, filled where chunks are stored and
emptied by every way chunks go (triggers), searched by Hamming distance with an exact re-rank, filtered to
the searched files, and no per-process matrix beside it; word counts for full text come from SQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from server.db import sqlite_vec
from server.db.session import create_db_engine, create_session_factory, session_scope
from server.runtime import Runtime
from server.services.knowledge import embedding, index
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama, default_models
from tests.server.conftest import bearer
from tests.server.services.knowledge.corpus import generate
from tests.server.test_knowledge import EMBED, OTHER_EMBED, make_collection, model_id, settle, upload

pytestmark = pytest.mark.sqlite_only  # sqlite-vec is SQLite's; pgvector is tested in test_knowledge.py

DIMS = 768


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


def runtime_of(client: TestClient) -> Runtime:
    return client.app.state.runtime


def vec_ids(session: Session, dims: int = DIMS) -> set[int]:
    return set(session.execute(text(f"SELECT chunk_id FROM knowledge_vec_{dims}")).scalars())


def chunk_ids(session: Session, dims: int = DIMS) -> set[int]:
    rows = session.execute(
        text("SELECT id FROM knowledge_chunks WHERE length(embedding) = :n"), {"n": 4 * dims}
    )
    return set(rows.scalars())


def stored_vector(session: Session, chunk_id: int) -> np.ndarray:
    blob = session.execute(
        text("SELECT embedding FROM knowledge_chunks WHERE id = :id"), {"id": chunk_id}
    ).scalar_one()
    return np.frombuffer(blob, dtype="<f4").copy()


def indexed_collection(client: TestClient, admin_token: str, token: str, documents: int = 3) -> dict:
    collection = make_collection(client, token, model_id(client, admin_token, EMBED))
    texts, _ = generate(documents=documents, places_per_document=3)
    file_ids = [upload(client, token, f"doc-{i}.txt", t) for i, t in enumerate(texts)]
    r = client.post(
        f"/api/knowledge/{collection['id']}/documents", json={"file_ids": file_ids}, headers=bearer(token)
    )
    assert r.status_code == 202, r.text
    settle(client)
    return {**collection, "file_ids": file_ids}


def assert_in_step(client: TestClient, dims: int = DIMS) -> None:
    with session_scope(runtime_of(client).session_factory) as session:
        assert vec_ids(session, dims) == chunk_ids(session, dims)


def test_stored_chunks_are_indexed_in_vec0_and_searched_there_filtered_by_file(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    collection = indexed_collection(client, admin_token, user_token)
    runtime = runtime_of(client)
    first, second = (uuid.UUID(f) for f in collection["file_ids"][:2])
    with session_scope(runtime.read_session_factory or runtime.session_factory) as session:
        assert index.uses_sqlite_vec(session) and not index.uses_matrix(runtime, session)
        ids = vec_ids(session)
        assert ids and ids == chunk_ids(session)
        model = collection["embedding_model"]
        target = session.execute(
            text("SELECT id FROM knowledge_chunks WHERE file_id = :f ORDER BY ordinal LIMIT 1"),
            {"f": first.hex},
        ).scalar_one()
        query = stored_vector(session, target)
        hits = index.vector_search(runtime, session, model, query, [first, second], k=5)
        assert hits[0][0] == target and hits[0][1] == pytest.approx(1.0, abs=1e-5)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
        # Filtered to the other file: none of the first file's chunks, the best of the second's.
        only_second = index.vector_search(runtime, session, model, query, [second], k=5)
        exact = index._rerank(session, model, query, None, [second], 5)
        assert only_second == exact and target not in {c for c, _ in only_second}
        assert index.vector_search(runtime, session, "another-model", query, [first], k=5) == []
    # No matrix was loaded in this process.
    assert index.vector_cache(runtime).peek(model) is None


def test_a_coarse_scan_of_many_chunks_is_re_ranked_exactly(
    client: TestClient, admin_token: str, user_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    collection = indexed_collection(client, admin_token, user_token, documents=2)
    runtime = runtime_of(client)
    model = collection["embedding_model"]
    files = [uuid.UUID(f) for f in collection["file_ids"]]
    rng = np.random.default_rng(7)
    centroids = rng.standard_normal((8, DIMS)).astype(np.float32)
    vectors = centroids[rng.integers(0, 8, 600)] + 0.3 * rng.standard_normal((600, DIMS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with session_scope(runtime.session_factory) as session:
        session.execute(
            text(
                "INSERT INTO knowledge_chunks (file_id, embedding_model, ordinal, text, char_start, "
                "char_end, tokens, embedding) VALUES (:f, :m, :o, 'seeded', 0, 0, 1, :e)"
            ),
            [
                {"f": files[i % 2].hex, "m": model, "o": 1000 + i, "e": embedding.to_blob(v)}
                for i, v in enumerate(vectors)
            ],
        )
    assert_in_step(client)
    # Fewer candidates than chunks: the Hamming scan really chooses; then only the first file is wanted, so
    # the oversampled scan leaves too few and the scan restricted to that file runs.
    monkeypatch.setattr(index, "COARSE_MIN", 40)
    with session_scope(runtime.read_session_factory or runtime.session_factory) as session:
        for i in range(0, 600, 60):
            query = vectors[i] + 0.01 * rng.standard_normal(DIMS).astype(np.float32)
            query = (query / np.linalg.norm(query)).astype(np.float32)
            hits = index.vector_search(runtime, session, model, query, files, k=10)
            exact = index._rerank(session, model, query, None, files, 10)
            assert len(hits) == 10 and hits[0] == exact[0]
            # Approximate candidates, exact scores: most of the exact top 10, each with its true cosine.
            assert len({c for c, _ in hits} & {c for c, _ in exact}) >= 6
            truth = dict(index._rerank(session, model, query, None, files, 1000))
            assert all(score == pytest.approx(truth[c], abs=1e-6) for c, score in hits)
            mine = index.vector_search(runtime, session, model, query, files[:1], k=30)
            of_first = set(
                session.execute(
                    text("SELECT id FROM knowledge_chunks WHERE file_id = :f"), {"f": files[0].hex}
                ).scalars()
            )
            assert len(mine) == 30 and {c for c, _ in mine} <= of_first


def test_every_way_chunks_go_empties_the_vec_index(
    client: TestClient, admin_token: str, user_token: str, create_user: Callable[..., str]
) -> None:
    runtime = runtime_of(client)
    collection = indexed_collection(client, admin_token, user_token, documents=4)
    cid, files = collection["id"], collection["file_ids"]
    with session_scope(runtime.session_factory) as session:
        before = chunk_ids(session)
        probe = {c: stored_vector(session, c) for c in before}

    def ghosts() -> set[int]:
        """Ids that come out of a search but are no chunk any more."""
        with session_scope(runtime.read_session_factory or runtime.session_factory) as session:
            alive = chunk_ids(session)
            found: set[int] = set()
            for vector in list(probe.values())[:: max(1, len(probe) // 8)]:
                found |= {c for c, _ in index.vector_search(runtime, session, model, vector, all_files, k=50)}
            return found - alive

    model = collection["embedding_model"]
    all_files = [uuid.UUID(f) for f in files]
    # A document removed from its collection (its chunks no other document uses are deleted).
    r = client.delete(f"/api/knowledge/{cid}/documents/{files[0]}", headers=bearer(user_token))
    assert r.status_code == 204
    assert_in_step(client)
    assert not ghosts()
    # A file row deleted (the API refuses while a collection uses it; its chunks go by the foreign key's
    # cascade, as with retention and account deletion).
    assert client.delete(f"/api/files/{files[1]}", headers=bearer(user_token)).status_code == 409
    with session_scope(runtime.session_factory) as session:
        session.execute(text("DELETE FROM files WHERE id = :f"), {"f": uuid.UUID(files[1]).hex})
    assert_in_step(client)
    assert not ghosts()
    # A new embedding model: the old model's chunks go, the new ones get their own table.
    r = client.patch(
        f"/api/knowledge/{cid}",
        json={"embedding_model": model_id(client, admin_token, OTHER_EMBED)},
        headers=bearer(user_token),
    )
    assert r.status_code == 200
    settle(client)
    assert_in_step(client)
    assert_in_step(client, 1024)
    with session_scope(runtime.session_factory) as session:
        assert not vec_ids(session) and vec_ids(session, 1024)
    assert not ghosts()
    # The collection deleted.
    assert client.delete(f"/api/knowledge/{cid}", headers=bearer(user_token)).status_code == 204
    assert_in_step(client, 1024)
    with session_scope(runtime.session_factory) as session:
        assert not vec_ids(session, 1024)
    # An account deleted: its files, and their chunks, go by cascades.
    other = create_user("leaving@example.com")
    indexed_collection(client, admin_token, other, documents=2)
    with session_scope(runtime.session_factory) as session:
        assert vec_ids(session)
        user_id = session.execute(
            text("SELECT id FROM users WHERE email = 'leaving@example.com'")
        ).scalar_one()
    r = client.delete(f"/api/users/{uuid.UUID(str(user_id))}", headers=bearer(admin_token))
    assert r.status_code == 204, r.text
    assert_in_step(client)
    with session_scope(runtime.session_factory) as session:
        assert not vec_ids(session) and not chunk_ids(session)


def test_an_older_database_is_indexed_at_its_first_search(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    collection = indexed_collection(client, admin_token, user_token, documents=2)
    runtime = runtime_of(client)
    files = [uuid.UUID(f) for f in collection["file_ids"]]
    with session_scope(runtime.session_factory) as session:  # as before sqlite-vec: no table, no triggers
        for suffix in ("ai", "ad", "au", "aux"):
            session.execute(text(f"DROP TRIGGER knowledge_vec_{DIMS}_{suffix}"))
        session.execute(text(f"DROP TABLE knowledge_vec_{DIMS}"))
        query = stored_vector(session, min(chunk_ids(session)))
    with session_scope(runtime.read_session_factory or runtime.session_factory) as session:
        hits = index.vector_search(runtime, session, collection["embedding_model"], query, files, k=3)
        assert hits[0][1] == pytest.approx(1.0, abs=1e-5)  # an exact scan meanwhile
    assert_in_step(client)


def test_word_counts_come_from_sql(client: TestClient, admin_token: str, user_token: str) -> None:
    collection = indexed_collection(client, admin_token, user_token, documents=2)
    runtime = runtime_of(client)
    with session_scope(runtime.session_factory) as session:
        texts = session.execute(text("SELECT text FROM knowledge_chunks")).scalars().all()
        counts, total = index.word_counts(session, collection["embedding_model"], ["the", "zzzqqq"])
    assert total == len(texts)
    assert counts["zzzqqq"] == 0
    # Counted through the full-text index, up to the highest limit informative_terms applies (plus one).
    assert counts["the"] == min(sum("the" in index._WORD.findall(t.lower()) for t in texts), 251)
    assert (
        index.informative_terms(["the", "zzzqqq"], counts, total) == ["the", "zzzqqq"][counts["the"] > 50 :]
    )


def test_a_chunk_changed_in_place_moves_with_it(
    client: TestClient, admin_token: str, user_token: str
) -> None:
    indexed_collection(client, admin_token, user_token, documents=1)
    runtime = runtime_of(client)
    table = f"knowledge_vec_{DIMS}"
    with session_scope(runtime.session_factory) as session:
        chunk = min(chunk_ids(session))
        session.execute(
            text("UPDATE knowledge_chunks SET embedding_model = 'renamed' WHERE id = :id"), {"id": chunk}
        )
        moved = session.execute(
            text(f"SELECT embedding_model FROM {table} WHERE chunk_id = :id"), {"id": chunk}
        )
        assert moved.scalar_one() == "renamed"
        session.execute(text("UPDATE knowledge_chunks SET embedding = NULL WHERE id = :id"), {"id": chunk})
        assert chunk not in vec_ids(session)
        session.execute(
            text("UPDATE knowledge_chunks SET embedding = :e WHERE id = :id"),
            {"id": chunk, "e": embedding.to_blob(np.ones(DIMS, dtype=np.float32) / np.sqrt(DIMS))},
        )
    assert_in_step(client)


def test_a_process_without_sqlite_vec_drops_the_triggers_and_the_next_one_rebuilds(
    client: TestClient,
    admin_token: str,
    user_token: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collection = indexed_collection(client, admin_token, user_token, documents=2)
    runtime = runtime_of(client)
    files = [uuid.UUID(f) for f in collection["file_ids"]]
    # Another process, whose SQLite cannot load sqlite-vec, opens the same database and changes chunks.
    monkeypatch.setattr(sqlite_vec, "available", lambda: False)
    engine = create_db_engine(settings.database_url)
    try:
        with session_scope(create_session_factory(engine)) as session:
            triggers = session.execute(
                text(
                    "SELECT count(*) FROM sqlite_master "
                    "WHERE name LIKE 'knowledge_vec_%' AND type = 'trigger'"
                )
            ).scalar_one()
            assert triggers == 0
            gone = min(chunk_ids(session))
            session.execute(text("DELETE FROM knowledge_chunks WHERE id = :id"), {"id": gone})
            session.execute(
                text(
                    "INSERT INTO knowledge_chunks (file_id, embedding_model, ordinal, text, char_start, "
                    "char_end, tokens, embedding) VALUES (:f, :m, 999, 'added', 0, 0, 1, :e)"
                ),
                {
                    "f": files[0].hex,
                    "m": collection["embedding_model"],
                    "e": stored_vector(session, gone + 1),
                },
            )
    finally:
        engine.dispose()
    monkeypatch.undo()
    # Back with sqlite-vec: the first search finds the index out of step, answers exactly, and rebuilds it.
    with session_scope(runtime.read_session_factory or runtime.session_factory) as session:
        query = stored_vector(session, gone + 1)
        hits = index.vector_search(runtime, session, collection["embedding_model"], query, files, k=50)
        assert gone not in {c for c, _ in hits} and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert_in_step(client)
