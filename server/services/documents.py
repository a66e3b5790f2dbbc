"""What a file is and the text inside it: content sniffing (never the client's name or type), image
checks with Pillow, and text extraction with well-kept libraries (pypdf, python-docx, beautifulsoup4).

Every refusal is a 4xx :class:`DomainError` with a clear code: a malformed PDF, a zip bomb, bytes that
are not what the name claims. Nothing here logs a document's text."""

from __future__ import annotations

import codecs
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from server.errors import DomainError, InvalidInput

#: Sniffed image types a vision model may receive.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PDF_MIME = "application/pdf"
TEXT_TYPES = frozenset({"text/plain", "text/markdown", "text/html", "text/csv"})

#: Images larger than this (width x height) are refused (a decompression bomb).
MAX_IMAGE_PIXELS = 64_000_000
#: A DOCX (a zip) whose parts would expand past this, or past this ratio, is refused before parsing.
MAX_UNZIPPED_BYTES = 256 * 1024 * 1024
MAX_ZIP_RATIO = 100
MAX_ZIP_MEMBERS = 5_000
MAX_PDF_PAGES = 5_000

_IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
_IMAGE_SUFFIXES[".gif"] = "image/gif"
_MARKDOWN = {".md", ".markdown", ".mdown"}
_HTML = {".html", ".htm", ".xhtml"}


class UnsupportedFile(DomainError):
    """A type we do not take, or bytes that are not what the name claims (422, as every content refusal:
    the request was well-formed, its file is not acceptable)."""

    status = 422
    code = "unsupported_file"


class MalformedFile(DomainError):
    status = 422
    code = "file_malformed"


@dataclass(frozen=True)
class PageSpan:
    """Page ``page`` (1-based) of a document is ``text[start:end]``."""

    page: int
    start: int
    end: int


@dataclass(frozen=True)
class Extracted:
    text: str
    pages: list[PageSpan] = field(default_factory=list)


@dataclass(frozen=True)
class Sniffed:
    mime: str
    kind: str  # "image" | "document"


def _claimed_image(name: str, claimed_mime: str | None) -> bool:
    return Path(name).suffix.lower() in _IMAGE_SUFFIXES or (claimed_mime or "").startswith("image/")


def _magic_image(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _decode(data: bytes, partial: bool = False) -> str | None:
    """The text of ``data`` if it is text (UTF-8, UTF-16 with a BOM, or mostly printable Latin-1);
    ``partial``: ``data`` is the start of a file (it may end inside a character)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return codecs.getincrementaldecoder("utf-16")().decode(data, final=not partial)
        except UnicodeDecodeError:
            return None
    if b"\x00" in data:
        return None
    try:
        return codecs.getincrementaldecoder("utf-8-sig")().decode(data, final=not partial)
    except UnicodeDecodeError:
        pass
    text = data.decode("latin-1")
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f")
    return text if control <= len(text) // 100 else None


def sniff(path: Path, name: str, claimed_mime: str | None = None) -> Sniffed:
    """The type of the file at ``path`` from its bytes. ``name``/``claimed_mime`` (the client's) only
    pick among text flavours, and a claim of an image the bytes do not back is refused."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    suffix = Path(name).suffix.lower()
    image = _magic_image(head)
    if image is not None:
        verify_image(path)
        return Sniffed(image, "image")
    if _claimed_image(name, claimed_mime):
        raise UnsupportedFile(
            f"{name!r} claims to be an image but its content is not PNG, JPEG, WebP or GIF",
            code="file_type_mismatch",
        )
    if head.startswith(b"%PDF-"):
        return Sniffed(PDF_MIME, "document")
    if suffix == ".pdf":
        raise UnsupportedFile(f"{name!r} is not a PDF", code="file_type_mismatch")
    if head.startswith(b"PK\x03\x04"):
        if _is_docx(path):
            return Sniffed(DOCX_MIME, "document")
        raise UnsupportedFile("only DOCX documents are accepted among zip-based formats")
    if suffix == ".docx":
        raise UnsupportedFile(f"{name!r} is not a DOCX document", code="file_type_mismatch")
    if _decode(head, partial=True) is None:
        raise UnsupportedFile(
            "unsupported file type: send PNG, JPEG, WebP or GIF images, or text, Markdown, code, PDF, "
            "DOCX, HTML or CSV documents"
        )
    lowered = head[:512].lstrip().lower()
    if suffix in _HTML or lowered.startswith((b"<!doctype html", b"<html")):
        return Sniffed("text/html", "document")
    if suffix in _MARKDOWN:
        return Sniffed("text/markdown", "document")
    if suffix == ".csv":
        return Sniffed("text/csv", "document")
    return Sniffed("text/plain", "document")


def verify_image(path: Path) -> tuple[int, int]:
    """Check that ``path`` is a whole, sane image (Pillow ``verify``); returns its size."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise MalformedFile(
                        f"the image is too large ({width}x{height} pixels)", code="image_too_large"
                    )
                img.verify()
    except DomainError:
        raise
    except Exception:
        raise MalformedFile(
            "the image is damaged or not a valid image file", code="image_malformed"
        ) from None
    return width, height


def _check_zip(path: Path) -> zipfile.ZipFile:
    """Open a zip and refuse a zip bomb (too many parts, too much expanded data, or a crazy ratio) before
    anything is decompressed."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise MalformedFile("the document is not a valid DOCX (damaged zip)") from None
    infos = archive.infolist()
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    bomb = (
        len(infos) > MAX_ZIP_MEMBERS
        or total > MAX_UNZIPPED_BYTES
        or any(i.file_size > MAX_ZIP_RATIO * max(i.compress_size, 1) for i in infos if i.file_size > 1 << 20)
        or (packed and total > MAX_ZIP_RATIO * packed and total > 1 << 20)
    )
    if bomb:
        archive.close()
        raise MalformedFile(
            "the document expands to far more data than it holds (a zip bomb)", code="zip_bomb"
        )
    return archive


def _is_docx(path: Path) -> bool:
    with _check_zip(path) as archive:
        return "word/document.xml" in archive.namelist()


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _pdf(path: Path) -> Extracted:
    from pypdf import PdfReader

    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise MalformedFile("the PDF is password-protected", code="file_encrypted")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise MalformedFile(f"the PDF has more than {MAX_PDF_PAGES} pages", code="document_too_long")
        parts: list[str] = []
        pages: list[PageSpan] = []
        offset = 0
        for number, page in enumerate(reader.pages, start=1):
            chunk = _tidy(page.extract_text() or "")
            if parts:
                offset += 2  # the "\n\n" between pages
            pages.append(PageSpan(number, offset, offset + len(chunk)))
            parts.append(chunk)
            offset += len(chunk)
    except DomainError:
        raise
    except Exception:
        raise MalformedFile("the PDF is damaged or malformed and could not be read") from None
    return Extracted("\n\n".join(parts), pages)


def _docx(path: Path) -> Extracted:
    import docx

    _check_zip(path).close()
    try:
        document = docx.Document(str(path))
        lines = [p.text for p in document.paragraphs]
        for table in document.tables:
            for row in table.rows:
                lines.append(" | ".join(cell.text for cell in row.cells))
    except Exception:
        raise MalformedFile("the DOCX document is damaged or malformed and could not be read") from None
    return Extracted(_tidy("\n".join(lines)))


def _html(text: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    return _tidy(soup.get_text("\n"))


def extract(path: Path, mime: str) -> Extracted:
    """The text of a document already sniffed as ``mime``. Refusals are 4xx DomainErrors."""
    if mime == PDF_MIME:
        result = _pdf(path)
    elif mime == DOCX_MIME:
        result = _docx(path)
    elif mime in TEXT_TYPES:
        text = _decode(path.read_bytes())
        if text is None:
            raise UnsupportedFile("the document is not readable text", code="file_type_mismatch")
        result = Extracted(_html(text) if mime == "text/html" else _tidy(text))
    else:
        raise UnsupportedFile(f"no text can be extracted from {mime}")
    if not result.text.strip():
        raise InvalidInput("the document holds no text (a scanned PDF has none)", code="document_empty")
    return result


def estimate_tokens(text: str) -> int:
    """About four characters a token (as the limits estimate prompts)."""
    return max(1, len(text) // 4)
