"""PDF probing and text extraction with PyMuPDF, in a process pool.

PyMuPDF "does not support running on multiple threads - may crash Python", and parsing is CPU
work that would block the event loop; so every call here runs in a separate process (spawned,
not forked: the worker process has threads). Pages are extracted in batches, so a long document
streams through the worker instead of being held whole, and the caller can report progress,
checkpoint and honour a cancel between batches.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from longtask.errors import PermanentError, TransientError

PDF_MAGIC = b"%PDF-"
MAX_PAGE_CHARS = 200_000  # a page with more text than this is cut (decompression bombs)


@dataclass(frozen=True)
class PdfInfo:
    pages: int
    title: str


def sniff(head: bytes) -> str | None:
    """The type of a file judged by its first bytes, never by its name."""
    # the PDF spec lets the header start within the first 1024 bytes
    if PDF_MAGIC in head[:1024]:
        return "application/pdf"
    return None


class PdfParser:
    """A small pool of parser processes, made on first use and shared by a worker's jobs."""

    def __init__(self, processes: int, timeout: float = 300.0) -> None:
        self._processes = processes
        self._timeout = timeout
        self._pool: ProcessPoolExecutor | None = None

    async def probe(self, path: str, max_pages: int) -> PdfInfo:
        """Page count and title; typed errors for encrypted, corrupt and over-long files."""
        outcome = await self._run(_probe, path)
        _raise_for(outcome)
        if outcome["pages"] > max_pages:
            raise PermanentError(f"{outcome['pages']} pages; the limit is {max_pages}",
                                 code="too_many_pages")
        return PdfInfo(outcome["pages"], outcome["title"])

    async def pages(self, path: str, first: int, last: int) -> list[str]:
        """The text of pages first..last (1-based, inclusive)."""
        outcome = await self._run(_extract, path, first, last)
        _raise_for(outcome)
        return list(outcome["texts"])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _run(self, fn: Any, *args: Any) -> dict[str, Any]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self._processes,
                                             mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._pool, fn, *args),
                                          self._timeout)
        except TimeoutError:
            self._restart()  # the stuck process must not keep a slot
            raise PermanentError(f"parsing took longer than {self._timeout:g}s",
                                 code="timeout") from None
        except BrokenProcessPool:
            self._restart()
            raise TransientError("the parser process died", code="parser_crashed") from None

    def _restart(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
            pool.shutdown(wait=False, cancel_futures=True)


def _raise_for(outcome: dict[str, Any]) -> None:
    if "error" in outcome:
        raise PermanentError(outcome["message"], code=outcome["error"])


# --- in the parser process -------------------------------------------------------------------

def _open(path: str) -> Any:
    import pymupdf

    pymupdf.TOOLS.mupdf_display_errors(False)
    return pymupdf.open(path, filetype="pdf")


def _probe(path: str) -> dict[str, Any]:
    try:
        doc = _open(path)
    except Exception as exc:
        return {"error": "corrupt", "message": f"not a readable PDF: {exc}"[:300]}
    with doc:
        if doc.needs_pass:
            return {"error": "encrypted", "message": "the PDF is password-protected"}
        if doc.page_count == 0:
            return {"error": "corrupt", "message": "the PDF has no readable pages"}
        return {"pages": doc.page_count, "title": (doc.metadata or {}).get("title") or ""}


def _extract(path: str, first: int, last: int) -> dict[str, Any]:
    try:
        with _open(path) as doc:
            texts = []
            for number in range(first - 1, min(last, doc.page_count)):
                text = doc.load_page(number).get_text("text", sort=True)
                texts.append(text[:MAX_PAGE_CHARS])
            return {"texts": texts}
    except Exception as exc:
        return {"error": "corrupt", "message": f"page {first}-{last} unreadable: {exc}"[:300]}
