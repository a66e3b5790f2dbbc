"""POST/GET/DELETE /api/files: streamed under the cap, content sniffed, owner-only, every document type
extracted, hostile files refused cleanly (never a 500)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.server.conftest import bearer
from tests.server.file_corpus import (
    TEXT_SAMPLES,
    docx_bytes,
    image_bytes,
    malformed_pdf,
    pdf_bytes,
    zip_bomb_docx,
)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(max_upload_mb=1)


def upload(
    client: TestClient, token: str, name: str, data: bytes, content_type: str = "application/octet-stream"
):
    return client.post("/api/files", files={"file": (name, data, content_type)}, headers=bearer(token))


def stored_paths(settings: Settings) -> list[Path]:
    root = settings.data_dir / "files"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_an_image_is_stored_sniffed_and_served_to_its_owner(client, user_token, settings, fmt, mime) -> None:
    data = image_bytes(fmt)
    r = upload(client, user_token, "../../etc/shot.bin", data, "text/plain")  # the client's type is ignored
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["mime"] == mime and body["kind"] == "image" and body["size"] == len(data)
    assert body["name"] == "shot.bin" and body["tokens"] is None
    got = client.get(f"/api/files/{body['id']}", headers=bearer(user_token))
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"].startswith(mime)
    assert got.headers["x-content-type-options"] == "nosniff"  # from the network guard
    assert got.headers["content-disposition"].startswith("inline")
    thumb = client.get(f"/api/files/{body['id']}?thumbnail=1", headers=bearer(user_token))
    assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG")
    # Stored under the data dir by id, never by the client's name.
    assert [p.name for p in stored_paths(settings) if not p.name.endswith(".thumb.png")] == [body["id"]]


@pytest.mark.parametrize("name", sorted(TEXT_SAMPLES))
def test_text_documents_are_extracted(client, user_token, app, name) -> None:
    data, mime, phrase = TEXT_SAMPLES[name]
    r = upload(client, user_token, name, data)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["mime"] == mime and body["kind"] == "document"
    assert body["tokens"] >= 1 and body["text_chars"] >= len(phrase)
    text = _text(app, body["id"])
    assert phrase in text
    if name == "page.html":
        assert "alert" not in text and "Heading" in text
    download = client.get(f"/api/files/{body['id']}", headers=bearer(user_token))
    assert download.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in download.headers["content-security-policy"]


def _text(app, file_id: str) -> str:
    import uuid

    from server.db.models import File
    from server.services import files as files_service

    runtime = app.state.runtime
    with runtime.session_factory() as session:
        row = session.get(File, uuid.UUID(file_id))
        assert row is not None
        return files_service.read_text(runtime, row)


def test_a_pdf_is_extracted_with_its_pages(client, user_token, app) -> None:
    r = upload(client, user_token, "report.pdf", pdf_bytes(["Kestrels hover.", "Owls hunt at night."]))
    assert r.status_code == 201, r.text
    assert r.json()["mime"] == "application/pdf"
    text = _text(app, r.json()["id"])
    assert "Kestrels hover." in text and "Owls hunt at night." in text
    import uuid

    from server.db.models import File
    from server.services import files as files_service

    runtime = app.state.runtime
    with runtime.session_factory() as session:
        row = session.get(File, uuid.UUID(r.json()["id"]))
        assert row is not None
        pages = files_service.read_pages(runtime, row)
    assert [p.page for p in pages] == [1, 2]
    assert "Owls" in text[pages[1].start : pages[1].end]


def test_a_docx_is_extracted_with_its_tables(client, user_token, app) -> None:
    data = docx_bytes(
        ["The quarterly plan.", "Second paragraph."], table=[["region", "sales"], ["north", "12"]]
    )
    r = upload(client, user_token, "plan.docx", data)
    assert r.status_code == 201, r.text
    assert r.json()["mime"].endswith("wordprocessingml.document")
    text = _text(app, r.json()["id"])
    assert "The quarterly plan." in text and "north | 12" in text


@pytest.mark.parametrize(
    ("name", "data", "status", "code"),
    [
        ("photo.png", b"this is just text pretending to be a picture\n", 422, "file_type_mismatch"),
        ("broken.png", image_bytes("PNG")[:60], 422, "image_malformed"),
        ("paper.pdf", malformed_pdf(), 422, "file_malformed"),
        ("bomb.docx", zip_bomb_docx(), 422, "zip_bomb"),
        ("fake.pdf", b"not a pdf at all", 422, "file_type_mismatch"),
        ("blob.bin", bytes(range(256)) * 4, 422, "unsupported_file"),
        ("empty.txt", b"", 422, "file_empty"),
        ("blank.txt", b"   \n\n ", 422, "document_empty"),
    ],
)
def test_hostile_or_broken_files_are_refused_cleanly(
    client, user_token, settings, name, data, status, code
) -> None:
    r = upload(
        client, user_token, name, data, "image/png" if name.endswith(".png") else "application/octet-stream"
    )
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and r.json()["message"]
    assert stored_paths(settings) == []  # nothing is left behind


def test_the_upload_cap_is_413_file_too_large(client, user_token, settings) -> None:
    data = b"a" * (1024 * 1024 + 10)  # just over max_upload_mb=1 (the guard lets the envelope through)
    r = upload(client, user_token, "big.txt", data)
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "file_too_large"
    assert stored_paths(settings) == []
    assert upload(client, user_token, "ok.txt", b"a" * (1024 * 1024 - 1)).status_code == 201


def test_another_users_file_is_404_everywhere(client, user_token, create_user) -> None:
    file_id = upload(client, user_token, "mine.txt", b"private words").json()["id"]
    other = create_user("other@example.com")
    for method, path in [
        ("GET", f"/api/files/{file_id}"),
        ("GET", f"/api/files/{file_id}/meta"),
        ("GET", f"/api/files/{file_id}?thumbnail=1"),
        ("DELETE", f"/api/files/{file_id}"),
    ]:
        r = client.request(method, path, headers=bearer(other))
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["code"] == "file_not_found"
    assert client.get("/api/files", headers=bearer(other)).json()["items"] == []
    assert [f["id"] for f in client.get("/api/files", headers=bearer(user_token)).json()["items"]] == [
        file_id
    ]
    assert client.get(f"/api/files/{file_id}/meta", headers=bearer(user_token)).json()["name"] == "mine.txt"


def test_the_stored_bytes_and_what_is_derived_from_them_are_private(client, user_token, settings) -> None:
    upload(client, user_token, "notes.md", b"# private notes\n")
    image = upload(client, user_token, "pic.png", image_bytes()).json()["id"]
    assert client.get(f"/api/files/{image}?thumbnail=1", headers=bearer(user_token)).status_code == 200
    paths = stored_paths(settings)
    assert {p.suffix for p in paths} >= {".txt", ".json", ".png"}  # text cache, page spans, thumbnail
    assert {oct(p.stat().st_mode & 0o777) for p in paths} == {"0o600"}


def test_delete_removes_the_row_and_the_bytes(client, user_token, settings) -> None:
    file_id = upload(client, user_token, "gone.md", b"# bye\n").json()["id"]
    assert stored_paths(settings)
    assert client.delete(f"/api/files/{file_id}", headers=bearer(user_token)).status_code == 204
    assert client.get(f"/api/files/{file_id}", headers=bearer(user_token)).status_code == 404
    assert stored_paths(settings) == []


def test_deleting_an_account_removes_its_files_from_disk(client, admin_token, create_user, settings) -> None:
    token = create_user("leaving@example.com")
    kept = upload(client, admin_token, "admins.txt", b"stays").json()["id"]
    upload(client, token, "theirs.txt", b"goes with the account")
    assert len(stored_paths(settings)) >= 2
    users = client.get("/api/users", headers=bearer(admin_token)).json()["items"]
    leaving = next(u for u in users if u["email"] == "leaving@example.com")
    assert client.delete(f"/api/users/{leaving['id']}", headers=bearer(admin_token)).status_code == 204
    left = stored_paths(settings)
    assert left and all(kept in str(p) for p in left)
    assert client.get(f"/api/files/{kept}", headers=bearer(admin_token)).status_code == 200


def test_no_document_text_reaches_the_logs(client, user_token, caplog) -> None:
    secret = "SECRET-PHRASE-4417 in the document"
    with caplog.at_level(logging.DEBUG):
        assert upload(client, user_token, "secret.txt", secret.encode()).status_code == 201
        assert upload(client, user_token, "secret.pdf", pdf_bytes([secret])).status_code == 201
    assert all("SECRET-PHRASE-4417" not in record.getMessage() for record in caplog.records)
