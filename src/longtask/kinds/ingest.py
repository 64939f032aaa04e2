"""The `ingest` kind: one uploaded file per item, through validate -> parse -> chunk ->
summarise -> embed -> store, with progress, checkpoints and typed per-file errors.

Resumable: pages are stored per batch, the summary and the chunk generation are checkpointed,
and embedded chunks are stored per batch under the run's generation; a re-run (retry, crash,
lost lease) continues where the last one stopped. The new generation replaces the document's old
chunks in one transaction, so search never sees a half-indexed document, and a finished file is
not redone.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

from longtask.core.context import JobContext
from longtask.core.errors import JobCanceled, PermanentError, TransientError
from longtask.core.kinds import kind
from longtask.kinds import llm
from longtask.pipeline import providers
from longtask.pipeline.chunk import Chunk, chunk_pages
from longtask.pipeline.embed import Embedder
from longtask.pipeline.pdf import ParseUsage, PdfParser, sniff
from longtask.store import documents, files
from longtask.store.documents import ChunkRow

PAGE_BATCH = 20
MIN_TEXT_CHARS = 20  # less than this in the whole document: nothing to index (a scan?)


async def _cleanup(ctx: JobContext, item: dict[str, Any]) -> None:
    """A canceled run leaves no chunks behind."""
    generation = ctx.checkpoint.get("generation")
    if generation and item.get("document_id"):
        await documents.drop_generation(ctx.pool, item["document_id"], generation)


@kind("ingest", public=False, on_cancel=_cleanup)
async def ingest(ctx: JobContext, item: dict[str, Any]) -> dict[str, Any]:
    try:
        return await _ingest(ctx, item)
    except JobCanceled:
        raise
    except (PermanentError, TransientError) as exc:
        final = isinstance(exc, PermanentError) or ctx.attempt > ctx.settings.max_retries
        if final and item.get("document_id"):  # a retry keeps its work, to resume from it
            await _cleanup(ctx, item)
            await documents.fail(ctx.pool, item["document_id"], exc.as_dict(), ctx.task_id)
        raise


async def _ingest(ctx: JobContext, item: dict[str, Any]) -> dict[str, Any]:
    name = item["filename"]
    if "rejected" in item:
        raise PermanentError(item["rejected"]["message"], code=item["rejected"]["code"])
    await ctx.progress(1, "checking the file", stage="validate", file=name)
    if item.get("size") == 0:
        raise PermanentError("the file is empty (0 bytes)", code="empty")
    head = await files.head(ctx.pool, ctx.tenant, item["file_id"])
    if head is None:
        raise PermanentError("the uploaded file is gone", code="missing")
    if sniff(head) is None:
        raise PermanentError("not a PDF (judged by its bytes, not its name)",
                             code="unsupported_type")
    doc = await documents.get(ctx.pool, ctx.tenant, item["document_id"])
    if doc.status == "indexed" and not item.get("reindex"):
        return {"document_id": doc.id, "filename": name, "status": "unchanged",
                "pages": doc.pages, "chunks": doc.chunk_count}
    if "generation" not in ctx.checkpoint:
        await ctx.save_checkpoint(generation=str(uuid.uuid4()))
    generation = ctx.checkpoint["generation"]

    pages_total, title = await _parse(ctx, item)
    texts = await documents.pages(ctx.pool, ctx.tenant, doc.id, 1, pages_total)
    if sum(len(t.strip()) for t in texts) < MIN_TEXT_CHARS:
        raise PermanentError("no extractable text (a scanned document without a text layer?)",
                             code="empty")
    # CPU work on up to LONGTASK_MAX_DOCUMENT_CHARS of text: off the event loop, so heartbeats
    # keep the lease meanwhile (the summariser's own work is off it too)
    chunks = await asyncio.to_thread(_chunk, ctx, texts)
    await ctx.progress(42, f"{len(chunks)} chunks", stage="chunk", file=name,
                       pages=pages_total, pages_total=pages_total, chunks=0,
                       chunks_total=len(chunks))

    if "language" not in ctx.checkpoint:
        await ctx.save_checkpoint(language=await documents.language_of(ctx.pool, "\n".join(texts)))
    language = ctx.checkpoint["language"]
    if "summary" not in ctx.checkpoint:
        summary = await llm.summariser(ctx).summarise("\n\n".join(texts))
        await ctx.save_checkpoint(summary=summary.as_dict())
    await ctx.progress(55, "summarised", stage="summarise", file=name,
                       summary_method=ctx.checkpoint["summary"]["method"])

    embedder: Embedder = ctx.resource("embedder",
                                      lambda: providers.embedder(ctx.settings, ctx.http))
    dim = await _embed(ctx, embedder, doc.id, generation, chunks, name, language)
    await ctx.progress(97, "storing", stage="store", file=name)
    count = await documents.publish(
        ctx.pool, doc.id, generation, title=title or Path(name).stem, pages=pages_total,
        summary=ctx.checkpoint["summary"], model=embedder.model, dim=dim, task_id=ctx.task_id,
        item_id=ctx.item_id, owner=ctx.worker_id, language=language)
    if count is None:
        ctx.cancel("lease_lost")
        ctx.raise_if_canceled()
    return {"document_id": doc.id, "filename": name, "status": "indexed", "pages": pages_total,
            "chunks": count, "summary_method": ctx.checkpoint["summary"]["method"]}


def _chunk(ctx: JobContext, texts: list[str]) -> list[Chunk]:
    tokenizer = providers.tokenizer(ctx.settings)  # loaded once per process, here off the loop
    return chunk_pages(texts, tokenizer, ctx.settings.chunk_tokens, ctx.settings.chunk_overlap)


async def _parse(ctx: JobContext, item: dict[str, Any]) -> tuple[int, str]:
    """Probe and extract the pages in batches (in parser processes); resumes after a batch.
    The file's parse time and text so far are checkpointed with its pages, so its limits count
    every run of the item, not each one afresh; a re-run after the parse does not parse again."""
    saved = ctx.checkpoint
    if saved.get("page_count") and saved.get("parsed") == saved["page_count"]:
        return int(saved["page_count"]), str(saved.get("title", ""))
    settings = ctx.settings
    parser: PdfParser = ctx.resource("pdf_parser", lambda: PdfParser(
        settings.parse_processes, timeout=settings.parse_timeout,
        memory_mb=settings.parse_memory_mb, max_chars=settings.max_document_chars))
    usage = ParseUsage(float(ctx.checkpoint.get("parse_seconds", 0.0)),
                       int(ctx.checkpoint.get("parsed_chars", 0)))
    name = item["filename"]
    with tempfile.TemporaryDirectory(prefix="longtask-") as scratch:
        path = str(Path(scratch) / "document.pdf")
        await files.copy_to(ctx.pool, ctx.tenant, item["file_id"], Path(path))
        info = await parser.probe(path, ctx.settings.max_pages, usage)
        done = int(ctx.checkpoint.get("parsed", 0))
        await ctx.progress(2 + 38 * done / info.pages, f"parsing {info.pages} pages",
                           stage="parse", file=name, pages=done, pages_total=info.pages)
        for first in range(done + 1, info.pages + 1, PAGE_BATCH):
            last = min(first + PAGE_BATCH - 1, info.pages)
            await documents.save_pages(ctx.pool, item["document_id"], first,
                                       await parser.pages(path, first, last, usage))
            await ctx.save_checkpoint(parsed=last, page_count=info.pages, title=info.title,
                                      parse_seconds=round(usage.seconds, 3),
                                      parsed_chars=usage.chars)
            await ctx.progress(2 + 38 * last / info.pages, f"page {last} of {info.pages}",
                               stage="parse", file=name, pages=last, pages_total=info.pages)
    return info.pages, info.title


async def _embed(ctx: JobContext, embedder: Embedder, document_id: str, generation: str,
                 chunks: list[Chunk], name: str, language: str) -> int:
    """Embed and store chunks batch by batch, after those a previous run already stored."""
    batch = ctx.settings.embed_batch
    done = await documents.chunks_stored(ctx.pool, document_id, generation)
    done -= done % batch  # batches are stored whole; redo a partial one (inserts are idempotent)
    dim = int(ctx.checkpoint.get("dim", 0))
    for start in range(done, len(chunks), batch):
        part = chunks[start:start + batch]
        vectors = await embedder.embed([c.text for c in part])
        if not dim:
            dim = len(vectors[0])
            await ctx.save_checkpoint(dim=dim)
            await _index_once(ctx, embedder.model, dim)
        await documents.save_chunks(ctx.pool, ctx.tenant, document_id, generation, embedder.model, [
            ChunkRow(c.idx, c.page_start, c.page_end, c.text, c.tokens, v)
            for c, v in zip(part, vectors)], language)
        stored = start + len(part)
        await ctx.save_checkpoint(embedded=stored)  # also stops here if the lease was lost
        await ctx.progress(55 + 40 * stored / len(chunks), f"chunk {stored} of {len(chunks)}",
                           stage="embed", file=name, chunks=stored, chunks_total=len(chunks))
    return dim


async def _index_once(ctx: JobContext, model: str, dim: int) -> None:
    made: set[tuple[str, int]] = ctx.resource("vector_indexes", set)
    if (model, dim) not in made and await documents.ensure_vector_index(ctx.pool, model, dim):
        made.add((model, dim))  # else another item asks again (search works without it)
