"""Chunking: bounded passages that overlap at word boundaries and know their page."""

from __future__ import annotations

import itertools

import pytest

from server.services.knowledge.chunking import chunk_text


def test_chunks_are_bounded_overlapping_and_cover_the_text() -> None:
    words = [f"w{i}" for i in range(2000)]
    text = " ".join(words)
    chunks = chunk_text(text, size=300, overlap=60)
    assert len(chunks) > 10
    assert all(len(c.text) <= 300 for c in chunks)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for a, b in itertools.pairwise(chunks):
        assert b.start < a.end  # overlap
        assert a.text.split()[-1] in b.text.split()  # whole words repeated, never a cut word
        assert text[b.start - 1] == " "
    assert set(" ".join(c.text for c in chunks).split()) == set(words)
    assert all(text[c.start : c.end].strip() == c.text for c in chunks)


def test_cuts_prefer_paragraphs_then_sentences() -> None:
    text = "First paragraph is here and it is long enough.\n\nSecond one. " + "x " * 30
    chunks = chunk_text(text, size=70, overlap=0)
    assert chunks[0].text == "First paragraph is here and it is long enough."
    assert chunks[1].text.startswith("Second one.")


def test_pages_and_edge_cases() -> None:
    text = "alpha " * 50 + "beta " * 50
    pages = [(1, 0, 300), (2, 300, len(text))]
    chunks = chunk_text(text, size=120, overlap=20, pages=pages)
    assert chunks[0].page == 1 and chunks[-1].page == 2
    assert chunk_text("   \n\n  ", size=100, overlap=10) == []
    assert chunk_text("short", size=100, overlap=10)[0].page is None
    assert chunk_text("x" * 250, size=100, overlap=10)[1].text == "x" * 100  # no spaces: hard cuts
    with pytest.raises(ValueError, match="size"):
        chunk_text("x", size=0, overlap=0)
