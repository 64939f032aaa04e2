"""Token-sized chunks with overlap that keep their page numbers."""

from __future__ import annotations

import pytest

from longtask.pipeline.chunk import chunk_pages


def test_chunks_overlap_and_keep_pages() -> None:
    pages = [" ".join(f"a{i}" for i in range(150)), " ".join(f"b{i}" for i in range(150))]
    chunks = chunk_pages(pages, size=100, overlap=20)
    assert [c.tokens for c in chunks] == [100, 100, 100, 60]
    assert [(c.page_start, c.page_end) for c in chunks] == [(1, 1), (1, 2), (2, 2), (2, 2)]
    assert chunks[0].text.split()[-20:] == chunks[1].text.split()[:20]  # the overlap
    assert chunks[1].text.split()[70:72] == ["b0", "b1"]  # crosses the page break in order
    words = [w for c in chunks for w in c.text.split()]
    assert set(words) == set(pages[0].split()) | set(pages[1].split())  # nothing lost
    assert [c.idx for c in chunks] == [0, 1, 2, 3]


def test_short_and_empty_documents() -> None:
    assert chunk_pages(["", "  "]) == []
    [only] = chunk_pages(["", "Hello, world."], size=50, overlap=10)
    assert (only.text, only.page_start, only.tokens) == ("Hello, world.", 2, 4)


def test_bad_overlap() -> None:
    with pytest.raises(ValueError):
        chunk_pages(["x"], size=10, overlap=10)


def test_chunks_begin_with_a_word() -> None:
    text = " ".join(f"w{i}," for i in range(100))  # a comma after every word
    chunks = chunk_pages([text], size=20, overlap=5)
    assert all(c.text[0].isalnum() for c in chunks)
    assert " ".join(chunks[-1].text.split()).endswith("w99,")
