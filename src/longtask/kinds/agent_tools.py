"""The tools an agent run may call, over the tenant's own documents: search its chunks (hybrid),
read a document's pages, read a document's summary. Each returns what the model sees and a
short line for the step event; passages keep their document and pages, for citations."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from longtask.core.context import JobContext
from longtask.core.errors import NotFound
from longtask.pipeline import providers
from longtask.pipeline.embed import Embedder
from longtask.store import documents
from longtask.store import search as search_store

MAX_PAGES_READ = 5
PASSAGE_CHARS = 800

SPECS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "search", "description": (
            "Find passages in the user's documents. mode: hybrid (default: words and meaning), "
            "text (exact words: names, codes, numbers), vector (meaning only)."),
        "parameters": {"type": "object", "required": ["query"], "properties": {
            "query": {"type": "string"},
            "k": {"type": "integer", "minimum": 1, "maximum": 10},
            "mode": {"type": "string", "enum": list(search_store.MODES)}}}}},
    {"type": "function", "function": {
        "name": "read_pages", "description": "Read pages of one document (at most 5).",
        "parameters": {"type": "object", "required": ["document_id", "first"], "properties": {
            "document_id": {"type": "string"}, "first": {"type": "integer", "minimum": 1},
            "last": {"type": "integer", "minimum": 1}}}}},
    {"type": "function", "function": {
        "name": "read_summary", "description": "Read the summary of one document.",
        "parameters": {"type": "object", "required": ["document_id"], "properties": {
            "document_id": {"type": "string"}}}}},
]


@dataclass(frozen=True)
class Observation:
    content: str  # what goes back to the model (JSON)
    summary: str  # one line for the step event
    sources: list[dict[str, Any]] = field(default_factory=list)  # citable passages


async def run(ctx: JobContext, name: str, arguments: dict[str, Any],
              only: list[str] | None) -> Observation:
    """Run one tool; a bad call is told to the model, not raised (it can correct itself)."""
    try:
        if name == "search":
            return await search(ctx, str(arguments.get("query") or ""),
                                _bounded(arguments.get("k"), 5, 1, 10), only,
                                str(arguments.get("mode") or "hybrid"))
        if name == "read_pages":
            return await _read_pages(ctx, str(arguments.get("document_id") or ""),
                                     arguments.get("first"), arguments.get("last"), only)
        if name == "read_summary":
            return await _read_summary(ctx, str(arguments.get("document_id") or ""), only)
    except (NotFound, ValueError) as exc:
        return _refusal(f"{name}: {exc}")
    return _refusal(f"there is no tool {name!r}")


async def search(ctx: JobContext, query: str, k: int, only: list[str] | None,
                 mode: str = "hybrid") -> Observation:
    if not query.strip():
        raise ValueError("`query` is empty")
    if mode not in search_store.MODES:
        raise ValueError(f"`mode` must be one of {', '.join(search_store.MODES)}")
    embedder: Embedder = ctx.resource("embedder",
                                      lambda: providers.embedder(ctx.settings, ctx.http))
    vector = None if mode == "text" else (await embedder.embed([query]))[0]
    hits = await search_store.search(ctx.pool, ctx.tenant, search_store.Query(
        query, k, mode, vector, embedder.model, only or None))
    sources = [_source(h["document_id"], h["filename"], h["page_start"], h["page_end"],
                       h["text"]) for h in hits]
    return Observation(json.dumps(sources), f"{len(sources)} passages for {query[:60]!r}", sources)


async def _read_pages(ctx: JobContext, document_id: str, first: Any, last: Any,
                      only: list[str] | None) -> Observation:
    doc = await documents.get(ctx.pool, ctx.tenant, _allowed(document_id, only))
    start = _bounded(first, 1, 1, max(doc.pages or 1, 1))
    end = min(_bounded(last, start, start, doc.pages or start), start + MAX_PAGES_READ - 1)
    texts = await documents.pages(ctx.pool, ctx.tenant, doc.id, start, end)
    sources = [_source(doc.id, doc.filename, start + i, start + i, text)
               for i, text in enumerate(texts)]
    return Observation(json.dumps(sources), f"{doc.filename} pages {start}-{end}", sources)


async def _read_summary(ctx: JobContext, document_id: str,
                        only: list[str] | None) -> Observation:
    doc = await documents.get(ctx.pool, ctx.tenant, _allowed(document_id, only))
    text = (doc.summary or {}).get("text") or "(no summary)"
    return Observation(json.dumps({"document_id": doc.id, "filename": doc.filename,
                                   "summary": text}), f"summary of {doc.filename}")


def _source(document_id: str, filename: str, first: int, last: int, text: str) -> dict[str, Any]:
    return {"document_id": str(document_id), "filename": filename, "page_start": first,
            "page_end": last, "text": text[:PASSAGE_CHARS]}


def _allowed(document_id: str, only: list[str] | None) -> str:
    document_id = str(uuid.UUID(document_id))  # ValueError for anything else
    if only is not None and document_id not in only:
        raise ValueError(f"document {document_id!r} is outside this question's documents")
    return document_id


def _bounded(value: Any, default: int, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        return default
    return max(low, min(high, value))


def _refusal(message: str) -> Observation:
    return Observation(json.dumps({"error": message}), message)
