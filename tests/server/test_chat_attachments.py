"""POST /api/chat and regenerate with ``attachments``: images to a vision model (Ollama ``images``, OpenAI
``image_url`` parts), ``model_not_vision`` before anything is stored, short documents whole in the context,
long ones through retrieval with citations, owner-only files, regenerate keeping the prompt's files, and
files deleted with their conversation when nothing else uses them."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.db.models import Conversation, File, Message, MessageFile
from server.settings import Settings
from tests.fakes.fake_ollama import FakeOllama
from tests.fakes.fake_openai import FakeOpenAI
from tests.server.chat_support import ChatModel, install_fake_model, parse_sse
from tests.server.conftest import bearer
from tests.server.file_corpus import image_bytes, pdf_bytes

VISION = "test-ollama/llava"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(chat_title_generation=False)


@pytest.fixture
def vision_fake() -> Iterator[FakeOllama]:
    models = {"llava:latest": {"capabilities": ("completion", "vision")}, "llama3.2:latest": {}}
    with FakeOllama(models=models) as fake:
        yield fake


@pytest.fixture
def seen(vision_fake: FakeOllama) -> list[list[dict[str, Any]]]:
    """The messages each chat request carried to the fake, as it received them."""
    captured: list[list[dict[str, Any]]] = []
    vision_fake.reply = lambda messages: captured.append(messages) or "I see it [1]."
    return captured


@pytest.fixture
def vision(monkeypatch: pytest.MonkeyPatch, vision_fake: FakeOllama) -> ChatModel:
    return install_fake_model(monkeypatch, vision_fake, VISION, upstream_model="llava:latest")


def upload(client: TestClient, token: str, name: str, data: bytes) -> str:
    r = client.post(
        "/api/files", files={"file": (name, data, "application/octet-stream")}, headers=bearer(token)
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def chat(client: TestClient, token: str, body: dict, path: str = "/api/chat"):
    r = client.post(path, json=body, headers=bearer(token))
    if not r.headers.get("content-type", "").startswith("text/event-stream"):
        return r, []
    events, _ = parse_sse(r.text)
    return r, events


def event(events: list, name: str) -> Any:
    return next(e.data for e in events if e.event == name)


def counts(app) -> tuple[int, int, int]:
    with app.state.runtime.session_factory() as s:
        return s.query(Conversation).count(), s.query(Message).count(), s.query(MessageFile).count()


def test_an_image_reaches_a_vision_model_as_ollama_images(client, app, user_token, vision, seen) -> None:
    data = image_bytes("PNG")
    file_id = upload(client, user_token, "shot.png", data)
    r, events = chat(
        client, user_token, {"model": vision.id, "content": "what is this?", "attachments": [file_id]}
    )
    assert r.status_code == 200, r.text
    assert event(events, "done")["message"]["status"] == "complete"
    last = seen[-1][-1]
    assert last["role"] == "user" and last["content"] == "what is this?"
    assert last["images"] == [base64.b64encode(data).decode()]
    meta = event(events, "meta")
    assert meta["attachments"] == [
        {
            "id": file_id,
            "name": "shot.png",
            "mime": "image/png",
            "size": len(data),
            "kind": "image",
            "mode": "image",
            "tokens": None,
        }
    ]
    detail = client.get(f"/api/conversations/{meta['conversation_id']}", headers=bearer(user_token)).json()
    user_message = next(m for m in detail["messages"] if m["role"] == "user")
    assert [a["id"] for a in user_message["attachments"]] == [file_id]
    # The next turn still shows the model the image (it is part of the conversation).
    r, _ = chat(
        client,
        user_token,
        {"model": vision.id, "content": "and now?", "conversation_id": meta["conversation_id"]},
    )
    assert r.status_code == 200
    first = next(m for m in seen[-1] if m["content"] == "what is this?")
    assert first["images"] == [base64.b64encode(data).decode()]
    assert "images" not in seen[-1][-1] or not seen[-1][-1]["images"]


def test_regenerate_keeps_the_prompts_attachments(client, user_token, vision, seen) -> None:
    data = image_bytes("JPEG")
    file_id = upload(client, user_token, "photo.jpg", data)
    _, events = chat(
        client, user_token, {"model": vision.id, "content": "describe", "attachments": [file_id]}
    )
    reply_id = event(events, "meta")["assistant_message_id"]
    r, events = chat(client, user_token, {}, f"/api/chat/{reply_id}/regenerate")
    assert r.status_code == 200, r.text
    assert seen[-1][-1]["images"] == [base64.b64encode(data).decode()]
    assert [a["id"] for a in event(events, "meta")["attachments"]] == [file_id]


def test_a_model_without_vision_is_refused_before_anything_is_stored(
    client, app, user_token, vision_fake, monkeypatch
) -> None:
    model = install_fake_model(monkeypatch, vision_fake, "test-ollama/llama3.2")
    file_id = upload(client, user_token, "shot.webp", image_bytes("WEBP"))
    before = counts(app)
    r, _ = chat(client, user_token, {"model": model.id, "content": "look", "attachments": [file_id]})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "model_not_vision" and "vision" in r.json()["message"]
    assert counts(app) == before


def test_an_image_goes_to_an_openai_compatible_model_as_an_image_url_part(
    client, user_token, monkeypatch
) -> None:
    captured: list[list[dict[str, Any]]] = []
    data = image_bytes("GIF")
    with FakeOpenAI(reply=lambda messages: captured.append(messages) or "a gif") as fake:
        model = install_fake_model(monkeypatch, fake, "test-openai/gpt", kind="openai")
        file_id = upload(client, user_token, "anim.gif", data)
        r, _ = chat(client, user_token, {"model": model.id, "content": "what?", "attachments": [file_id]})
    assert r.status_code == 200, r.text
    parts = captured[-1][-1]["content"]
    assert {"type": "text", "text": "what?"} in parts
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert urls == ["data:image/gif;base64," + base64.b64encode(data).decode()]


def test_a_short_document_goes_whole_into_the_context(client, user_token, vision, seen) -> None:
    file_id = upload(client, user_token, "notes.md", b"# Notes\n\nThe launch code word is PELICAN.\n")
    r, events = chat(
        client,
        user_token,
        {"model": vision.id, "content": "what is the code word?", "attachments": [file_id]},
    )
    assert r.status_code == 200, r.text
    prompt = seen[-1][-1]["content"]
    assert "The launch code word is PELICAN." in prompt and prompt.endswith("what is the code word?")
    assert 'name="notes.md"' in prompt
    (attachment,) = event(events, "meta")["attachments"]
    assert attachment["mode"] == "full" and attachment["tokens"] >= 1
    assert event(events, "meta")["citations"] == []


def test_a_long_document_goes_through_retrieval_with_citations(client, app, user_token, vision, seen) -> None:
    filler = [f"Chapter {i} talks about ordinary weather and gardening routines." for i in range(60)]
    pages = ["\n".join(filler[:30]), "The secret ingredient of the soup is SAFFRON.", "\n".join(filler[30:])]
    file_id = upload(client, user_token, "cookbook.pdf", pdf_bytes(pages))
    body = {
        "model": vision.id,
        "content": "What is the secret ingredient of the soup?",
        "attachments": [file_id],
        "options": {"context_length": 256},  # the document is far over half of it
    }
    r, events = chat(client, user_token, body)
    assert r.status_code == 200, r.text
    meta = event(events, "meta")
    assert meta["attachments"][0]["mode"] == "retrieval"
    citations = meta["citations"]
    assert citations and citations[0]["number"] == 1 and citations[0]["file_id"] == file_id
    assert any("SAFFRON" in c["text"] for c in citations)
    # A PDF's passages name the page they start on.
    assert all(c["page"] in (1, 2) for c in citations if "SAFFRON" in c["text"])
    prompt = seen[-1][-1]["content"]
    assert "<sources>" in prompt and "[1]" in prompt and "SAFFRON" in prompt
    assert "Chapter 59" not in prompt or len(prompt) < 10_000  # not the whole document
    done = event(events, "done")["message"]
    assert done["citations"] == citations
    detail = client.get(f"/api/conversations/{meta['conversation_id']}", headers=bearer(user_token)).json()
    reply = next(m for m in detail["messages"] if m["role"] == "assistant")
    assert reply["citations"] == citations


def test_another_users_file_is_404_and_nothing_is_stored(
    client, app, user_token, create_user, vision
) -> None:
    other = create_user("other@example.com")
    file_id = upload(client, other, "theirs.txt", b"someone else's words")
    before = counts(app)
    r, _ = chat(client, user_token, {"model": vision.id, "content": "read it", "attachments": [file_id]})
    assert r.status_code == 404 and r.json()["code"] == "file_not_found"
    assert counts(app) == before


def test_files_go_with_their_conversation_unless_used_elsewhere(
    client, app, user_token, settings, vision
) -> None:
    only_here = upload(client, user_token, "one.png", image_bytes("PNG"))
    shared = upload(client, user_token, "two.txt", b"shared notes")
    _, first = chat(
        client, user_token, {"model": vision.id, "content": "a", "attachments": [only_here, shared]}
    )
    _, second = chat(client, user_token, {"model": vision.id, "content": "b", "attachments": [shared]})
    conv = event(first, "meta")["conversation_id"]
    assert client.delete(f"/api/conversations/{conv}", headers=bearer(user_token)).status_code == 204
    assert client.get(f"/api/files/{only_here}", headers=bearer(user_token)).status_code == 404
    assert client.get(f"/api/files/{shared}", headers=bearer(user_token)).status_code == 200
    stored = {p.name for p in (settings.data_dir / "files").rglob("*") if p.is_file()}
    assert only_here not in stored and shared in stored
    conv2 = event(second, "meta")["conversation_id"]
    assert client.delete(f"/api/conversations/{conv2}", headers=bearer(user_token)).status_code == 204
    assert not [p for p in (settings.data_dir / "files").rglob("*") if p.is_file()]
    with app.state.runtime.session_factory() as s:
        assert s.query(File).count() == 0


def test_no_document_text_in_the_logs_of_a_chat(client, user_token, vision, seen, caplog) -> None:
    file_id = upload(client, user_token, "diary.txt", b"MY-PRIVATE-DIARY-LINE 5521")
    with caplog.at_level(logging.DEBUG):
        r, _ = chat(
            client, user_token, {"model": vision.id, "content": "summarise", "attachments": [file_id]}
        )
    assert r.status_code == 200
    assert "MY-PRIVATE-DIARY-LINE" in seen[-1][-1]["content"]
    assert all("MY-PRIVATE-DIARY-LINE" not in rec.getMessage() for rec in caplog.records)


def test_the_export_names_the_files_and_shows_image_thumbnails(client, user_token, vision, seen) -> None:
    picture = upload(client, user_token, "cat.png", image_bytes("PNG", size=(600, 400)))
    doc = upload(client, user_token, "facts.txt", b"Cats sleep a lot.")
    _, events = chat(
        client, user_token, {"model": vision.id, "content": "about this", "attachments": [picture, doc]}
    )
    conv = event(events, "meta")["conversation_id"]
    md = client.get(f"/api/conversations/{conv}/export?format=markdown", headers=bearer(user_token))
    assert md.status_code == 200
    assert "![cat.png](data:image/png;base64," in md.text
    assert "*Attached: facts.txt (whole document)*" in md.text
    assert "Cats sleep a lot." not in md.text  # the document's content stays out of the export
    data = client.get(f"/api/conversations/{conv}/export", headers=bearer(user_token)).json()
    user_message = next(m for m in data["conversations"][0]["messages"] if m["role"] == "user")
    assert [(a["name"], a["mode"]) for a in user_message["attachments"]] == [
        ("cat.png", "image"),
        ("facts.txt", "full"),
    ]
    # The JSON export imports again (the files themselves are not in it).
    r = client.post("/api/conversations/import", json=data, headers=bearer(user_token))
    assert r.status_code in (200, 201), r.text


def test_regenerate_can_add_files_to_its_prompt(client, user_token, vision, seen) -> None:
    _, events = chat(client, user_token, {"model": vision.id, "content": "what do you think?"})
    reply_id = event(events, "meta")["assistant_message_id"]
    doc = upload(client, user_token, "context.txt", b"The meeting moved to Thursday.")
    r, events = chat(client, user_token, {"attachments": [doc]}, f"/api/chat/{reply_id}/regenerate")
    assert r.status_code == 200, r.text
    assert "The meeting moved to Thursday." in seen[-1][-1]["content"]
    assert [a["id"] for a in event(events, "meta")["attachments"]] == [doc]


def test_an_unknown_collection_is_404_and_nothing_is_stored(client, app, user_token, vision) -> None:
    before = counts(app)
    body = {"model": vision.id, "content": "hi", "knowledge": ["0f0e1e2a-0000-4000-8000-000000000000"]}
    r, _ = chat(client, user_token, body)
    assert r.status_code == 404, r.text
    assert counts(app) == before


def test_collections_that_are_gone_are_dropped_from_the_conversation(client, app, user_token, vision) -> None:
    import uuid

    _, events = chat(client, user_token, {"model": vision.id, "content": "first"})
    conv_id = uuid.UUID(event(events, "meta")["conversation_id"])
    with app.state.runtime.session_factory() as s:
        row = s.get(Conversation, conv_id)
        assert row is not None
        row.knowledge = ["0f0e1e2a-0000-4000-8000-000000000000"]  # a collection since deleted
        s.commit()
    r, _ = chat(client, user_token, {"model": vision.id, "content": "next", "conversation_id": str(conv_id)})
    assert r.status_code == 200, r.text
    detail = client.get(f"/api/conversations/{conv_id}", headers=bearer(user_token)).json()
    assert detail["knowledge"] is None


def test_an_empty_knowledge_list_is_accepted_and_stores_none(client, user_token, vision) -> None:
    r, events = chat(client, user_token, {"model": vision.id, "content": "hi", "knowledge": []})
    assert r.status_code == 200, r.text
    conv_id = event(events, "meta")["conversation_id"]
    assert client.get(f"/api/conversations/{conv_id}", headers=bearer(user_token)).json()["knowledge"] is None
