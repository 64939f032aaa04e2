"""Split page texts into token-sized, overlapping chunks that remember their pages.

A token here is a word or a punctuation mark (`\\w+|[^\\w\\s]`), close to what a sentence
embedding model's word-piece tokenizer counts for English; chunks of 200 such tokens stay inside
all-MiniLM-L6-v2's 256-token window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class Chunk:
    idx: int
    text: str
    page_start: int  # 1-based
    page_end: int
    tokens: int


def chunk_pages(pages: list[str], size: int = 200, overlap: int = 40) -> list[Chunk]:
    """Chunks of at most `size` tokens, each starting `size - overlap` tokens after the last."""
    if not 0 <= overlap < size:
        raise ValueError("overlap must be at least 0 and less than size")
    spans: list[tuple[int, int, int]] = []  # (page, start, end) of each token in its page text
    for number, text in enumerate(pages, 1):
        spans.extend((number, m.start(), m.end()) for m in _TOKEN.finditer(text))
    chunks: list[Chunk] = []
    step = size - overlap
    start = 0
    while start < len(spans):
        window = spans[start:start + size]
        chunks.append(Chunk(len(chunks), _text(pages, window), window[0][0], window[-1][0],
                            len(window)))
        if start + size >= len(spans):
            break
        start += step
        while start < len(spans) and not _is_word(pages, spans[start]):
            start += 1  # begin a chunk with a word, not with the comma before it
    return chunks


def _is_word(pages: list[str], span: tuple[int, int, int]) -> bool:
    return pages[span[0] - 1][span[1]].isalnum()


def _text(pages: list[str], window: list[tuple[int, int, int]]) -> str:
    """The original text of a window of tokens, across page breaks, with whitespace folded."""
    parts = []
    first = 0
    while first < len(window):
        page = window[first][0]
        last = first
        while last + 1 < len(window) and window[last + 1][0] == page:
            last += 1
        parts.append(pages[page - 1][window[first][1]:window[last][2]])
        first = last + 1
    return " ".join(" ".join(part.split()) for part in parts)
