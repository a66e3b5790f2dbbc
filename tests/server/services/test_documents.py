"""services/documents.py: sniffing by content, text extraction of every type, and clean refusals."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from server.errors import DomainError
from server.services import documents
from tests.server.file_corpus import (
    TEXT_SAMPLES,
    docx_bytes,
    image_bytes,
    malformed_pdf,
    pdf_bytes,
    zip_bomb_docx,
)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "blob"  # stored files never carry the client's name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", sorted(TEXT_SAMPLES))
def test_text_types_are_sniffed_and_extracted(tmp_path: Path, name: str) -> None:
    data, mime, phrase = TEXT_SAMPLES[name]
    path = write(tmp_path, name, data)
    sniffed = documents.sniff(path, name)
    assert (sniffed.mime, sniffed.kind) == (mime, "document")
    assert phrase in documents.extract(path, mime).text


def test_html_is_recognised_by_content_whatever_its_name(tmp_path: Path) -> None:
    path = write(tmp_path, "x", b"<!DOCTYPE html><html><body><p>hi</p></body></html>")
    assert documents.sniff(path, "page.txt").mime == "text/html"


def test_utf8_cut_inside_a_character_at_the_sniff_window_is_still_text(tmp_path: Path) -> None:
    data = b"a" + ("é" * 5000).encode()  # the 4096-byte head ends in the middle of an "é"
    path = write(tmp_path, "accents.txt", data)
    assert documents.sniff(path, "accents.txt").mime == "text/plain"
    assert documents.extract(path, "text/plain").text.startswith("aé")


def test_utf16_with_a_bom_is_text(tmp_path: Path) -> None:
    path = write(tmp_path, "w.txt", "Grüße aus Köln".encode("utf-16"))
    assert documents.extract(path, documents.sniff(path, "w.txt").mime).text == "Grüße aus Köln"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_images_are_sniffed_and_verified(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path, "i", image_bytes(fmt))
    sniffed = documents.sniff(path, "anything.bin")
    assert sniffed.kind == "image" and sniffed.mime == f"image/{fmt.lower()}"


def test_a_pdf_keeps_its_page_spans(tmp_path: Path) -> None:
    path = write(tmp_path, "p.pdf", pdf_bytes(["first page", "second page"]))
    extracted = documents.extract(path, documents.sniff(path, "p.pdf").mime)
    assert [extracted.text[p.start : p.end] for p in extracted.pages] == ["first page", "second page"]


def test_a_docx_is_sniffed_inside_its_zip(tmp_path: Path) -> None:
    path = write(tmp_path, "d", docx_bytes(["hello docx"]))
    assert documents.sniff(path, "renamed.bin").mime == documents.DOCX_MIME
    assert documents.extract(path, documents.DOCX_MIME).text == "hello docx"


def test_a_zip_bomb_is_refused_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "b.docx", zip_bomb_docx())
    with pytest.raises(DomainError) as info:
        documents.sniff(path, "b.docx")
    assert (info.value.status, info.value.code) == (422, "zip_bomb")


def test_a_zip_expanding_past_the_total_cap_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(documents, "MAX_UNZIPPED_BYTES", 1000)
    path = tmp_path / "many.docx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("word/document.xml", "x" * 2000)
    with pytest.raises(DomainError) as info:
        documents.sniff(path, "many.docx")
    assert info.value.code == "zip_bomb"


def test_a_plain_zip_is_not_a_document(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(DomainError) as info:
        documents.sniff(path, "a.zip")
    assert (info.value.status, info.value.code) == (422, "unsupported_file")


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("x.png", b"plain text", "file_type_mismatch"),
        ("x.jpg", b"%PDF-1.4 not an image", "file_type_mismatch"),
        ("x.png", image_bytes("PNG")[:40], "image_malformed"),
        ("x.pdf", malformed_pdf(), "file_malformed"),
        ("x.docx", b"PK\x03\x04 truncated", "file_malformed"),
    ],
)
def test_refusals_are_clear_4xx_errors(tmp_path: Path, name: str, data: bytes, code: str) -> None:
    path = write(tmp_path, name, data)
    with pytest.raises(DomainError) as info:
        documents.extract(path, documents.sniff(path, name).mime)
    assert 400 <= info.value.status < 500 and info.value.code == code and info.value.message


def test_a_decompression_bomb_image_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "MAX_IMAGE_PIXELS", 100)
    path = write(tmp_path, "big.png", image_bytes("PNG", size=(20, 20)))
    with pytest.raises(DomainError) as info:
        documents.sniff(path, "big.png")
    assert info.value.code == "image_too_large"
