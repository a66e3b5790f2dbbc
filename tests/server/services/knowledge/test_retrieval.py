"""passages_for_chat (the chat's seam) and the hybrid index: attached long documents are indexed on demand,
collections are searched under their own models, another user's file or collection is 404, and fusion
ranks by both lists."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from server.db.models import User
from server.db.session import session_scope
from server.errors import NotFound
from server.runtime import Runtime
from server.services.knowledge import index, retrieval
from server.services.knowledge.retrieval import Passage
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.server.conftest import bearer
from tests.server.services.knowledge.corpus import generate
from tests.server.test_knowledge import EMBED, make_collection, model_id, settle, upload


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
def settings(make_settings: Callable[..., Settings], fake: FakeOllama) -> Settings:
    return make_settings(ollama_url=fake.url, knowledge_chunk_chars=500, knowledge_chunk_overlap=80)


def ask(
    client: TestClient,
    email: str,
    query: str,
    *,
    file_ids: list[str] = (),  # type: ignore[assignment]
    collection_ids: list[str] = (),  # type: ignore[assignment]
    limit: int = 3,
) -> list[Passage]:
    runtime: Runtime = client.app.state.runtime

    async def call() -> list[Passage]:
        with session_scope(runtime.session_factory) as session:
            user = session.scalars(select(User).where(User.email == email)).one()
            return await retrieval.passages_for_chat(
                runtime,
                session,
                user,
                query=query,
                file_ids=[uuid.UUID(f) for f in file_ids],
                collection_ids=[uuid.UUID(c) for c in collection_ids],
                limit=limit,
            )

    assert client.portal is not None
    return client.portal.call(call)


def test_attached_documents_are_indexed_on_demand_and_cited(
    client: TestClient, admin_token: str, user_token: str, fake: FakeOllama
) -> None:
    runtime: Runtime = client.app.state.runtime
    runtime.settings.knowledge_embedding_model = model_id(client, admin_token, EMBED)
    texts, facts = generate(documents=2, places_per_document=4)
    files = [upload(client, user_token, f"long-{i}.txt", t) for i, t in enumerate(texts)]
    passages = ask(client, "user@example.com", facts[2].question, file_ids=files)
    assert fake.embedded and all(model == EMBED for model, _ in fake.embedded)
    assert [p.number for p in passages] == [1, 2, 3]
    assert any(facts[2].answer in p.text for p in passages)
    top = passages[0]
    assert top.collection_id is None and top.file_name.startswith("long-") and str(top.file_id) in files
    assert isinstance(top.chunk_id, int) and top.score > 0
    # Already indexed: the next question embeds only itself.
    fake.embedded.clear()
    ask(client, "user@example.com", facts[5].question, file_ids=files)
    assert fake.embedded == [(EMBED, [facts[5].question])]


def test_without_an_embedding_model_attached_documents_use_full_text(
    client: TestClient, user_token: str, fake: FakeOllama
) -> None:
    texts, facts = generate(documents=1, places_per_document=4)
    files = [upload(client, user_token, "plain.txt", texts[0])]
    passages = ask(client, "user@example.com", facts[3].question, file_ids=files, limit=2)
    assert any(facts[3].answer in p.text for p in passages)
    assert fake.embedded == []  # nothing left the server


def test_another_users_file_or_collection_is_not_found(
    client: TestClient, admin_token: str, user_token: str, create_user: Callable[..., str]
) -> None:
    other = create_user("other@example.com")
    theirs = upload(client, other, "theirs.txt", "A secret about the copper mine.")
    with pytest.raises(NotFound) as caught:
        ask(client, "user@example.com", "copper", file_ids=[theirs])
    assert caught.value.code == "file_not_found"
    collection = make_collection(client, other, model_id(client, admin_token, EMBED))
    with pytest.raises(NotFound) as caught:
        ask(client, "user@example.com", "copper", collection_ids=[collection["id"]])
    assert caught.value.code == "collection_not_found"


def test_collections_and_attachments_together(
    client: TestClient, admin_token: str, user_token: str, create_user: Callable[..., str]
) -> None:
    embed = model_id(client, admin_token, EMBED)
    shared = make_collection(client, admin_token, embed, name="Shared atlas")
    texts, facts = generate(documents=2, places_per_document=3, seed=5)
    admin_files = [upload(client, admin_token, f"atlas-{i}.txt", t) for i, t in enumerate(texts)]
    client.post(
        f"/api/knowledge/{shared['id']}/documents",
        json={"file_ids": admin_files},
        headers=bearer(admin_token),
    )
    settle(client)
    client.patch(f"/api/knowledge/{shared['id']}", json={"shared": True}, headers=bearer(admin_token))
    mine = upload(client, user_token, "mine.txt", "The violet lighthouse of Orsk glows every winter night.")
    passages = ask(
        client, "user@example.com", facts[0].question, file_ids=[mine], collection_ids=[shared["id"]], limit=4
    )
    assert any(facts[0].answer in p.text for p in passages)
    assert {p.collection_id for p in passages if str(p.file_id) in admin_files} == {uuid.UUID(shared["id"])}
    passages = ask(
        client, "user@example.com", "violet lighthouse Orsk", file_ids=[mine], collection_ids=[shared["id"]]
    )
    assert passages[0].text.startswith("The violet lighthouse") and passages[0].collection_id is None


def test_fusion_and_query_terms() -> None:
    assert index.fuse([1, 2, 3], [3, 4])[0][0] == 3  # in both lists: first
    assert [c for c, _ in index.fuse([5], [])] == [5]
    assert index.fts_terms('What is "the" Tufalra\'s OR founding*?') == ["tufalra", "founding"]
    vector = np.ones(4, dtype=np.float32) / 2
    assert index.vector_search(None, None, "", vector, []) == []  # type: ignore[arg-type]
