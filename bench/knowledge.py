"""Knowledge collections: indexing throughput and retrieval latency.

In process (the app's own runtime, lifespan and migrations; a fake Ollama computes the embeddings):

1. Indexing: PDFs of ``--pages`` pages uploaded through POST /api/files (text extraction happens there and
   is not counted), added to a collection and indexed by the background indexer; reports pages per second
   without the time spent waiting for the embedding model, which is reported apart.
2. Retrieval: a collection of 10k and 100k chunks (768-dimensional unit vectors in topic clusters, text of
   a Zipf-distributed vocabulary, seeded with bulk INSERTs), then ``--queries`` searches through
   services/knowledge/retrieval.search with the question's embedding precomputed (the target excludes it):
   p50/p95, and the first (cold) query apart.

    .venv/bin/python bench/knowledge.py [--backend sqlite|postgres] [--database-url URL]
                                        [--sizes 10000,100000] [--queries 200] [--pages 200]

``--backend postgres`` uses ``--database-url`` when given (an empty database), else a throw-away cluster
(tests/server/pg_support.py). Target: p95 <= 30 ms at 100k chunks on SQLite. Results are appended to
bench/results/knowledge.txt.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bench.chat_common import pct
from server.app import create_app
from server.db.base import utcnow
from server.db.models import KnowledgeDocument, User
from server.db.session import session_scope
from server.runtime import Runtime
from server.services import models as models_service
from server.services.knowledge import embedding, index, indexer, retrieval
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.server.file_corpus import pdf_bytes

PASSWORD = "bench-Password-1234"
EMBED = "nomic-embed-text:latest"
DIMS = 768
RESULTS = Path(__file__).resolve().parent / "results" / "knowledge.txt"


def login(client: TestClient) -> dict[str, str]:
    """The first admin, signed in, with the initial password replaced (as the first start asks)."""
    r = client.post("/api/auth/login", json={"email": "admin@example.com", "password": PASSWORD})
    r.raise_for_status()
    r = client.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": PASSWORD + "-new"},
        headers={"Authorization": f"Bearer {r.json()['access_token']}"},
    )
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def vocabulary(n: int = 5000) -> list[str]:
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=int(rng.integers(3, 10)))) for _ in range(n)]


def page_text(rng: np.random.Generator, words: list[str], n_words: int) -> str:
    ranks = np.minimum(rng.zipf(1.3, size=n_words), len(words)) - 1
    lines, line = [], []
    for r in ranks:
        line.append(words[r])
        if len(line) == 12:
            lines.append(" ".join(line) + ".")
            line = []
    return "\n".join(lines)


def bench_indexing(client: TestClient, headers: dict[str, str], model: str, pages: int) -> str:
    runtime: Runtime = client.app.state.runtime
    rng = np.random.default_rng(7)
    words = vocabulary()
    per_file = 10
    file_ids = []
    for i in range(pages // per_file):
        data = pdf_bytes([page_text(rng, words, 360) for _ in range(per_file)])
        r = client.post(
            "/api/files", files={"file": (f"doc-{i}.pdf", data, "application/pdf")}, headers=headers
        )
        r.raise_for_status()
        file_ids.append(r.json()["id"])
    r = client.post("/api/knowledge", json={"name": "bench", "embedding_model": model}, headers=headers)
    r.raise_for_status()
    cid = r.json()["id"]
    original_kick = indexer.kick
    indexer.kick = lambda rt: None  # type: ignore[assignment,return-value]  # the bench drives the indexer
    try:
        client.post(f"/api/knowledge/{cid}/documents", json={"file_ids": file_ids}, headers=headers)
    finally:
        indexer.kick = original_kick
    stats = indexer.IndexStats()
    began = time.perf_counter()
    assert client.portal is not None
    client.portal.call(indexer.run_pending, runtime, stats)
    total = time.perf_counter() - began
    docs = client.get(f"/api/knowledge/{cid}/documents", headers=headers).json()
    assert all(d["status"] == "ready" for d in docs), docs[:2]
    n_pages = len(file_ids) * per_file
    own = max(total - stats.embed_seconds, 1e-9)
    return (
        f"indexing: {n_pages} PDF pages ({stats.chars / n_pages:.0f} chars/page) -> {stats.chunks} chunks "
        f"in {total:.2f} s; waiting for the embedding model (fake Ollama over HTTP) "
        f"{stats.embed_seconds:.2f} s; "
        f"without it {own:.2f} s = {n_pages / own:.1f} pages/s ({stats.chunks / own:.0f} chunks/s)"
    )


def seed(runtime: Runtime, user_id: uuid.UUID, model: str, chunks: int, words: list[str]) -> uuid.UUID:
    """A collection with ``chunks`` ready chunks over files of 100 chunks each, inserted in bulk."""
    rng = np.random.default_rng(chunks)
    centroids = rng.standard_normal((200, DIMS)).astype(np.float32)
    per_file = 100
    with session_scope(runtime.session_factory) as session:
        cid = uuid.uuid4()
        now = utcnow()
        session.execute(
            text(
                "INSERT INTO knowledge_collections (id, owner_id, name, description, embedding_model, "
                "shared, created_at, updated_at) VALUES (:id, :owner, :name, '', :m, false, :now, :now)"
            ).bindparams(),
            {
                "id": cid.hex if _sqlite(session) else cid,
                "owner": _u(session, user_id),
                "name": f"seed-{chunks}",
                "m": model,
                "now": now,
            },
        )
        pg = index.uses_pgvector(runtime, session)
        if pg:  # bulk load first, build the HNSW index once at the end (pgvector's advice)
            session.execute(text(f"DROP INDEX IF EXISTS ix_knowledge_chunks_hnsw_{DIMS}"))
            session.commit()
        elif index.uses_sqlite_vec(session):  # the vec0 table's triggers index the rows as they come
            index.ensure_vec_index(session, DIMS)
        next_id = 1 + (
            session.execute(text("SELECT coalesce(max(id), 0) FROM knowledge_chunks")).scalar_one()
        )
        for f in range(chunks // per_file):
            fid = uuid.uuid4()
            session.execute(
                text(
                    "INSERT INTO files (id, owner_id, name, mime, size, sha256, kind, storage_key, "
                    "text_chars, tokens, created_at, updated_at) VALUES (:id, :owner, :name, 'text/plain', "
                    "1, :sha, 'document', :key, 1, 1, :now, :now)"
                ),
                {
                    "id": _u(session, fid),
                    "owner": _u(session, user_id),
                    "name": f"seed-{f}.txt",
                    "sha": "0" * 64,
                    "key": f"files/seed/{fid}",
                    "now": now,
                },
            )
            session.add(
                KnowledgeDocument(
                    collection_id=cid,
                    file_id=fid,
                    embedding_model=model,
                    status="ready",
                    progress=1.0,
                    chunk_count=per_file,
                )
            )
            topics = rng.integers(0, len(centroids), size=per_file)
            vectors = centroids[topics] + 0.6 * rng.standard_normal((per_file, DIMS)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            rows = []
            for i in range(per_file):
                ranks = np.minimum(rng.zipf(1.3, size=120), len(words)) - 1
                row = {
                    "id": next_id,
                    "file_id": _u(session, fid),
                    "m": model,
                    "ordinal": i,
                    "text": " ".join(words[r] for r in ranks),
                    "emb": embedding.to_blob(vectors[i]),
                }
                if pg:
                    row["vec"] = "[" + ",".join(f"{x:.6g}" for x in vectors[i].tolist()) + "]"
                rows.append(row)
                next_id += 1
            columns = (
                "id, file_id, embedding_model, ordinal, text, page, char_start, char_end, tokens, embedding"
            )
            values = ":id, :file_id, :m, :ordinal, :text, NULL, 0, 0, 30, :emb"
            if pg:
                columns += ", embedding_vec"
                values += ", CAST(:vec AS vector)"
            session.execute(text(f"INSERT INTO knowledge_chunks ({columns}) VALUES ({values})"), rows)
            session.commit()  # one file at a time: the app's own writers are not locked out for long
        if pg:
            if not _sqlite(session):
                session.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
            index.ensure_hnsw(session, DIMS)
        if not _sqlite(session):
            session.execute(text("ANALYZE knowledge_chunks"))
    return cid


def _sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _u(session: Session, value: uuid.UUID) -> object:
    return value.hex if _sqlite(session) else value


def measure(
    client: TestClient, user_id: uuid.UUID, cid: uuid.UUID, words: list[str], rng: np.random.Generator, n: int
) -> list[float]:
    """Milliseconds of ``n + 1`` searches; the question's embedding is precomputed (the target excludes
    it)."""
    runtime: Runtime = client.app.state.runtime
    vectors = rng.standard_normal((n + 1, DIMS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    questions = [" ".join(words[r] for r in rng.integers(0, 300, size=5)) for _ in range(n + 1)]
    current = {"i": 0}

    async def fixed(*args: object, **kwargs: object) -> np.ndarray:
        return vectors[current["i"]][None, :]

    async def one(question: str) -> list[retrieval.Passage]:
        return await retrieval.search(runtime, user_id, query=question, collection_ids=[cid], limit=5)

    original = embedding.embed_texts
    embedding.embed_texts = fixed  # type: ignore[assignment]
    timings = []
    cpu = 0.0
    assert client.portal is not None
    try:
        for i in range(n + 1):
            current["i"] = i
            if i == 1:
                cpu = time.process_time()  # after the first (cold) query
            t0 = time.perf_counter()
            found = client.portal.call(one, questions[i])
            timings.append((time.perf_counter() - t0) * 1000)
            assert len(found) == 5
    finally:
        embedding.embed_texts = original  # type: ignore[assignment]
    timings.append((time.process_time() - cpu) * 1000 / max(1, n))  # CPU per warm query, last
    return timings


def bench_retrieval(client: TestClient, model: str, sizes: list[int], queries: int) -> list[str]:
    runtime: Runtime = client.app.state.runtime
    words = vocabulary()
    with session_scope(runtime.session_factory) as session:
        user_id = session.scalars(select(User.id)).first()
    assert user_id is not None
    lines = []
    rng = np.random.default_rng(3)
    seeded = 0
    for size in sizes:
        began = time.perf_counter()
        cid = seed(runtime, user_id, model, size - seeded, words)
        seeded = size
        seed_s = time.perf_counter() - began
        timings = measure(client, user_id, cid, words, rng, queries)
        cold, warm, cpu = timings[0], timings[1:-1], timings[-1]
        lines.append(
            f"retrieval at {size:>6} chunks: p50 {pct(warm, 50):6.1f} ms  p95 {pct(warm, 95):6.1f} ms  "
            f"max {max(warm):6.1f} ms  CPU {cpu:5.1f} ms/query (whole process)  (first query {cold:.0f} ms; "
            f"seeding {seed_s:.0f} s; "
            f"{queries} queries, top 5, hybrid vectors + full text)"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--database-url", default="", help="PostgreSQL URL of an empty database")
    parser.add_argument("--sizes", default="10000,100000", help="chunk counts to measure retrieval at")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--pages", type=int, default=200, help="PDF pages to index")
    parser.add_argument("--no-write", action="store_true", help="do not append to bench/results")
    args = parser.parse_args()
    backend = "postgres" if args.database_url else args.backend
    cluster = None
    data_dir = Path(tempfile.mkdtemp(prefix="mt-bench-knowledge-"))
    url = f"sqlite:///{data_dir / 'modeltrain.db'}"
    if backend == "postgres":
        url = args.database_url
        if not url:
            from tests.server.pg_support import PostgresCluster

            cluster = PostgresCluster().start()
            url = cluster.new_database("bench")
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    lines = []
    try:
        with FakeOllama() as fake:
            settings = Settings(
                data_dir=data_dir,
                database_url=url,
                initial_admin_password=PASSWORD,
                ollama_url=fake.url,
                secret_key="bench-secret-" + "x7Kq2mPz9vRt4nLw8sYb3cHd6fJg1aE5",
                chat_title_generation=False,
                backup_schedule="off",  # a first-start backup would dump the database while it is measured
            )
            with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
                headers = login(client)
                providers = client.get("/api/providers", headers=headers).json()["items"]
                model = models_service.ollama_model_id(uuid.UUID(providers[0]["id"]), EMBED)
                lines.append(bench_indexing(client, headers, model, args.pages))
                print(lines[-1], flush=True)
                lines += bench_retrieval(client, model, sizes, args.queries)
    finally:
        if cluster is not None:
            cluster.stop()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    header = (
        f"# bench/knowledge.py --backend {backend} --sizes {args.sizes} --queries {args.queries} "
        f"--pages {args.pages}\n# run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; load average at the end: {load}; "
        "target: p95 <= 30 ms at 100k chunks on SQLite"
    )
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write(header + "\n" + "\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
