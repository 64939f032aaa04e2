"""Split page texts into overlapping chunks, counted in the embedding model's own tokens, that
remember their pages.

No chunk holds more tokens than the model reads (its window), so no chunk's tail goes unembedded.
Within that, a chunk ends where the text breaks best: a page break, then a paragraph (a blank
line), then a sentence, then a word; mid-word (between a word's pieces) only when a single word
fills the window. A chunk is never cut below half its size to reach a better break. The next one
starts `overlap` tokens before the end, at the first word (or sentence) there.
"""

from __future__ import annotations

from dataclasses import dataclass

from longtask.pipeline.tokenize import Tokenizer

_SENTENCE_END = ".!?:;…。！？"

# how well the text breaks before a token
_MID_WORD, _WORD, _SENTENCE, _PARAGRAPH, _PAGE = range(5)


@dataclass(frozen=True)
class Chunk:
    idx: int
    text: str
    page_start: int  # 1-based
    page_end: int
    tokens: int  # in the embedding model's tokens


def chunk_pages(pages: list[str], tokenizer: Tokenizer, size: int = 256,
                overlap: int = 40) -> list[Chunk]:
    """Chunks of at most `size` tokens (and never more than the tokenizer's window), each
    sharing about `overlap` tokens with the one before."""
    size = min(size * tokenizer.per_token, tokenizer.window)
    overlap *= tokenizer.per_token
    if not 0 <= overlap < size:
        raise ValueError("overlap must be at least 0 and less than the chunk size")
    spans: list[tuple[int, int, int]] = []  # (page, start, end) of each token in its page text
    for number, text in enumerate(pages, 1):
        spans.extend((number, s, e) for s, e in tokenizer.spans(text) if e > s)
    chunks: list[Chunk] = []
    start = 0
    while start < len(spans):
        end = _end(pages, spans, start, size)
        text = _text(pages, spans[start:end])
        tokens = tokenizer.count(text)
        while tokens > size and end - start > 1:  # a BPE may count joined text a little higher
            end -= max(1, tokens - size)
            text = _text(pages, spans[start:end])
            tokens = tokenizer.count(text)
        chunks.append(Chunk(len(chunks), text, spans[start][0], spans[end - 1][0], tokens))
        if end >= len(spans):
            break
        start = _next_start(pages, spans, start, end, overlap)
    return chunks


def _end(pages: list[str], spans: list[tuple[int, int, int]], start: int, size: int) -> int:
    """Where the chunk from `start` ends (exclusive): the best break in its second half."""
    if len(spans) - start <= size:
        return len(spans)
    best, best_score = start + size, -1
    for i in range(start + size, start + max(1, size // 2) - 1, -1):
        score = _break(pages, spans, i)
        if score > best_score:
            best, best_score = i, score
            if score == _PAGE:
                break
    return best


def _next_start(pages: list[str], spans: list[tuple[int, int, int]], start: int, end: int,
                overlap: int) -> int:
    """The next chunk's first token: the first sentence start in the overlap's first half,
    else the first word start, from `overlap` tokens before `end`; `end` if no word starts
    there."""
    if overlap == 0:
        return end
    first = max(start + 1, end - overlap)
    for i in range(first, min(end, first + overlap // 2)):
        if _break(pages, spans, i) >= _SENTENCE:
            return i
    for i in range(first, end):
        if _break(pages, spans, i) >= _WORD:
            return i
    return end  # one long word: no overlap rather than half a word


def _break(pages: list[str], spans: list[tuple[int, int, int]], i: int) -> int:
    """How well the text breaks between token i - 1 and token i."""
    page, _, before = spans[i - 1]
    if spans[i][0] != page:
        return _PAGE
    text = pages[page - 1]
    gap = text[before:spans[i][1]]
    if not gap:
        return _MID_WORD
    if gap.count("\n") >= 2 and not gap.strip():
        return _PARAGRAPH
    if text[before - 1] in _SENTENCE_END:
        return _SENTENCE
    return _WORD


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
