"""Chunks counted in the model's own tokens, with overlap, that keep their page numbers."""

from __future__ import annotations

import pytest

from longtask.pipeline.chunk import chunk_pages
from longtask.pipeline.tokenize import ByteTokenizer, local

WORDPIECE = local()


def test_no_chunk_is_over_the_window_and_nothing_is_lost() -> None:
    numbers = " ".join(f"PN-{i:05d}/{i * 7919 % 100000:05d}x" for i in range(400))
    german = " ".join(["Donaudampfschifffahrtsgesellschaftskapitänsmützenabzeichen"] * 200)
    for pages in ([numbers], [german], [numbers, german, numbers]):
        chunks = chunk_pages(pages, WORDPIECE, size=1000, overlap=40)  # size: capped by window
        assert WORDPIECE.window == 254  # 256 with [CLS] and [SEP]
        assert all(WORDPIECE.count(c.text) == c.tokens <= 254 for c in chunks)
        words = {w for c in chunks for w in c.text.split()}
        assert words == {w for page in pages for w in page.split()}


def test_chunks_overlap_and_keep_pages() -> None:
    pages = [" ".join(f"a{i}" for i in range(150)), " ".join(f"b{i}" for i in range(150))]
    chunks = chunk_pages(pages, WORDPIECE, size=100, overlap=20)
    assert all(c.tokens <= 100 for c in chunks)
    for before, after in zip(chunks, chunks[1:]):
        shared = set(before.text.split()) & set(after.text.split())
        assert shared or before.page_end < after.page_start  # overlap, except at a page break
    for c in chunks:  # each word is on the page the chunk says
        pages_of = {1 if w.startswith("a") else 2 for w in c.text.split()}
        assert pages_of == set(range(c.page_start, c.page_end + 1)), c
    words = [w for c in chunks for w in c.text.split()]
    assert set(words) == set(pages[0].split()) | set(pages[1].split())
    assert [c.idx for c in chunks] == list(range(len(chunks)))


def test_chunks_end_at_sentences_and_paragraphs() -> None:
    sentence = "The valve opens when the pressure passes two bar and closes again below it."
    paragraph = " ".join([sentence] * 4)
    text = "\n\n".join([paragraph] * 12)
    chunks = chunk_pages([text], WORDPIECE, size=120, overlap=20)
    assert len(chunks) > 3
    assert all(c.text.endswith(".") for c in chunks)  # no chunk ends mid-sentence
    assert all(c.text.startswith("The valve") for c in chunks)  # nor starts mid-sentence


def test_a_word_longer_than_the_window_is_cut_between_its_pieces() -> None:
    word = "x" * 3000
    chunks = chunk_pages([word], WORDPIECE, size=256, overlap=0)
    assert all(c.tokens <= 254 for c in chunks)
    assert "".join(c.text for c in chunks) == word


def test_a_byte_budget_for_a_model_whose_tokenizer_is_unknown() -> None:
    text = "Größenänderung 東京 " * 100
    chunks = chunk_pages([text], ByteTokenizer(200), size=100, overlap=3)  # 400 bytes, over
    assert all(len(c.text.encode()) <= 200 for c in chunks)  # the window: 200
    assert {w for c in chunks for w in c.text.split()} == set(text.split())


def test_short_and_empty_documents() -> None:
    assert chunk_pages(["", "  "], WORDPIECE) == []
    [only] = chunk_pages(["", "Hello, world."], WORDPIECE, size=50, overlap=10)
    assert (only.text, only.page_start, only.tokens) == ("Hello, world.", 2, 4)


def test_bad_overlap() -> None:
    with pytest.raises(ValueError):
        chunk_pages(["x"], WORDPIECE, size=10, overlap=10)
