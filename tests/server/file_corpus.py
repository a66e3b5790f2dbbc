"""A small corpus of every attachment type, generated on the fly (no binaries in the repository): images
with Pillow, PDFs with pypdf's writer, DOCX with python-docx, and the hostile ones (a malformed PDF, a
zip bomb, text that claims to be an image)."""

from __future__ import annotations

import io
import zipfile

from PIL import Image


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (32, 24), color: str = "red") -> bytes:
    buffer = io.BytesIO()
    mode = "RGB" if fmt in ("JPEG",) else "RGBA"
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf_bytes(pages: list[str]) -> bytes:
    """A PDF with one line of Helvetica text per page."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    font_ref = writer._add_object(font)
    for text in pages:
        page = writer.add_blank_page(width=612, height=792)
        stream = DecodedStreamObject()
        lines = "".join(f"({_escape(line)}) Tj 0 -14 Td " for line in text.split("\n"))
        stream.set_data(f"BT /F1 12 Tf 72 720 Td {lines}ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref})}
        )
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def docx_bytes(paragraphs: list[str], table: list[list[str]] | None = None) -> bytes:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def malformed_pdf() -> bytes:
    """Starts like a PDF, then garbage: no xref, no objects."""
    return b"%PDF-1.7\n" + b"\x00\xff garbage " * 200 + b"\n%%EOF\n"


def zip_bomb_docx() -> bytes:
    """A "DOCX" whose document part expands 20 MB from a few KB of zeros (ratio in the thousands)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b"\0" * (20 * 1024 * 1024))
    return buffer.getvalue()


TEXT_SAMPLES: dict[str, tuple[bytes, str, str]] = {
    # name -> (bytes, sniffed mime, a phrase the extracted text holds)
    "notes.txt": (b"Plain notes about the aurora borealis.\n", "text/plain", "aurora borealis"),
    "readme.md": (b"# Title\n\nMarkdown about *zebras*.\n", "text/markdown", "Markdown about *zebras*"),
    "main.py": (b"def answer():\n    return 42  # the answer\n", "text/plain", "return 42"),
    "table.csv": (b"city,population\nOslo,700000\n", "text/csv", "Oslo,700000"),
    "page.html": (
        b"<!doctype html><html><head><style>p{}</style><script>alert('x')</script></head>"
        b"<body><h1>Heading</h1><p>Paragraph about lighthouses.</p></body></html>",
        "text/html",
        "Paragraph about lighthouses.",
    ),
}
