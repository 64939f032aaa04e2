"""Summaries: any OpenAI-compatible chat endpoint (streamed), or an offline extractive one.

The offline summariser says what it is (`"method": "extractive"`): it picks the document's most
representative sentences and never pretends to be an LLM.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from longtask.pipeline.chat import ChatClient, OnDelta

SUMMARY_INPUT_CHARS = 12_000  # what the summary prompt sees of a long document

_SYSTEM = ("You summarise documents for a search index. Write 3 to 5 plain sentences that say "
           "what the document is about and its key points. No preamble.")


@dataclass(frozen=True)
class Summary:
    method: str  # "llm" or "extractive"
    text: str
    model: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "text": self.text, "model": self.model}


class Summariser(Protocol):
    async def summarise(self, text: str, on_delta: OnDelta | None = None) -> Summary: ...


class ChatSummariser:
    """A summary streamed from an OpenAI-compatible chat endpoint."""

    def __init__(self, chat: ChatClient) -> None:
        self._chat = chat
        self.model = chat.model

    async def summarise(self, text: str, on_delta: OnDelta | None = None) -> Summary:
        reply = await self._chat.complete([
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": text[:SUMMARY_INPUT_CHARS]},
        ], on_delta=on_delta)
        return Summary("llm", reply.content.strip(), self.model)


class ExtractiveSummariser:
    """Offline: the few sentences that share the most words with the whole document."""

    def __init__(self, sentences: int = 3) -> None:
        self._sentences = sentences

    async def summarise(self, text: str, on_delta: OnDelta | None = None) -> Summary:
        # seconds of regex work on a long document: in a thread, so the event loop (heartbeats,
        # cancels, other items) keeps moving
        summary = await asyncio.to_thread(extractive_summary, text, self._sentences)
        if on_delta is not None and summary:
            await on_delta(summary)
        return Summary("extractive", summary)


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_WORD = re.compile(r"[a-zA-Z][a-zA-Z'-]{2,}")
_STOP = frozenset(
    "the and for are but not you all any can had her was one our out has him his how its may "
    "new now old see two who did get let put say she too use that with have this will your from "
    "they been more when were what which their there than then them these those into also some "
    "such only over other each most very would could should about after before where while".split()
)


def extractive_summary(text: str, count: int = 3) -> str:
    sentences = [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if 30 <= len(s) <= 600]
    if not sentences:
        return " ".join(text.split())[:500]
    freq = Counter(w for w in _WORD.findall(text.lower()) if w not in _STOP)

    def score(sentence: str) -> float:
        words = [w for w in _WORD.findall(sentence.lower()) if w not in _STOP]
        return sum(freq[w] for w in words) / (len(words) + 5) if words else 0.0

    best = sorted(range(len(sentences)), key=lambda i: score(sentences[i]), reverse=True)[:count]
    return " ".join(sentences[i] for i in sorted(best))
