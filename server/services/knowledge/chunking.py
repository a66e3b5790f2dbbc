"""Cut a document's text into overlapping passages, at paragraph, sentence or word boundaries."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

#: Where a cut may fall, best first: a paragraph, a line, a sentence end, a word boundary.
_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


@dataclass(frozen=True, slots=True)
class ChunkSpan:
    ordinal: int
    text: str
    start: int
    end: int
    #: The 1-based page the chunk starts on, for a document with pages (PDF), else None.
    page: int | None
    tokens: int


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _cut(text: str, start: int, size: int) -> int:
    end = min(len(text), start + size)
    if end >= len(text):
        return len(text)
    floor = start + size // 2  # never cut in the first half of a chunk
    for sep in _BREAKS:
        at = text.rfind(sep, floor, end)
        if at >= 0:
            return at + len(sep)
    return end


def chunk_text(
    text: str, *, size: int, overlap: int, pages: Sequence[tuple[int, int, int]] = ()
) -> list[ChunkSpan]:
    """Passages of at most ``size`` characters, each starting about ``overlap`` characters before the end of
    the previous one (at a word boundary), so a sentence cut by one chunk is whole in the next. ``pages``:
    (page, start, end) spans of the text (a PDF's), which give each chunk the page it starts on."""
    if size <= 0:
        raise ValueError("size must be positive")
    overlap = max(0, min(overlap, size // 2))
    spans = sorted(pages, key=lambda span: span[1])
    starts = [span[1] for span in spans]
    chunks: list[ChunkSpan] = []
    start = 0
    n = len(text)
    while start < n:
        # Skip leading blanks so a chunk starts on content.
        while start < n and text[start].isspace():
            start += 1
        if start >= n:
            break
        end = _cut(text, start, size)
        piece = text[start:end].strip()
        if piece:
            at = bisect.bisect_right(starts, start) - 1
            page = spans[at][0] if at >= 0 else None
            chunks.append(ChunkSpan(len(chunks), piece, start, end, page, estimate_tokens(piece)))
        if end >= n:
            break
        nxt = max(start + 1, end - overlap)
        if overlap:
            space = text.find(" ", nxt, end)
            if space >= 0:
                nxt = space + 1
        start = nxt
    return chunks
