"""The PDF fixtures are what they say they are, read back with PyMuPDF."""

from __future__ import annotations

import pymupdf
import pytest

from longtask.testing import pdfs
from tests.support import SAMPLES


def _open(data: bytes) -> pymupdf.Document:
    return pymupdf.open(stream=data, filetype="pdf")


def test_samples_are_committed_as_generated_and_hold_their_phrase() -> None:
    for sample in pdfs.SAMPLES:
        committed = (SAMPLES / f"{sample.filename}.pdf").read_bytes()
        assert committed == pdfs.text_pdf(sample.title, sample.pages)
        with _open(committed) as doc:
            assert doc.page_count == len(sample.pages)
            assert doc.metadata["title"] == sample.title
            texts = [" ".join(page.get_text().split()) for page in doc]
        assert [i + 1 for i, t in enumerate(texts) if sample.phrase in t] == [sample.phrase_page]
        others = [s for s in pdfs.SAMPLES if s is not sample]
        assert not any(sample.phrase in " ".join(o.pages) for o in others)


def test_bad_inputs_behave_as_documented() -> None:
    with _open(pdfs.encrypted_pdf()) as doc:
        assert doc.needs_pass
    with pytest.raises(pymupdf.FileDataError):
        _open(pdfs.corrupt_pdf())
    with _open(pdfs.truncated_pdf()) as doc:  # repaired on open: what survived is readable
        lengths = [len(page.get_text().strip()) for page in doc]
        assert lengths[0] > 1000 and lengths[-1] == 0
    with _open(pdfs.scanned_pdf(2)) as doc:
        assert doc.page_count == 2 and all(page.get_text().strip() == "" for page in doc)
    assert not pdfs.not_a_pdf().startswith(b"%PDF") and pdfs.not_a_pdf()[:4] == b"\x89PNG"
    assert b"%PDF" not in pdfs.pdf_named_but_text()


def test_many_pages() -> None:
    with _open(pdfs.many_pages_pdf(300)) as doc:
        assert doc.page_count == 300
        assert doc[299].get_text().startswith("Page 300.")
    assert pdfs.many_pages_pdf(3, seed=1) != pdfs.many_pages_pdf(3, seed=2)


def test_the_bombs_are_small_files_with_much_inside() -> None:
    text_bomb = pdfs.text_bomb_pdf()
    assert len(text_bomb) < 400_000
    with _open(text_bomb) as doc:
        assert doc.page_count == 2000
        assert 190_000 <= len(doc[1999].get_text()) <= 200_000
    assert len(pdfs.form_bomb_pdf(8)) < 4000
    with _open(pdfs.form_bomb_pdf(2, pages=3)) as doc:  # 100 rectangles a page, and no text
        assert doc.page_count == 3
        assert all(len(page.get_drawings()) == 100 and not page.get_text() for page in doc)
