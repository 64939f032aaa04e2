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
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from longtask.core.errors import PermanentError, TransientError

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
        # one call per process at a time, so the time limit counts parsing, not waiting for a
        # process that another file (a slow one, a bomb) holds
        self._slots = asyncio.Semaphore(processes)

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
        loop = asyncio.get_running_loop()
        async with self._slots:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self._processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with_parent, initargs=(os.getpid(),))
            pool = self._pool
            try:
                return await asyncio.wait_for(loop.run_in_executor(pool, fn, *args),
                                              self._timeout)
            except TimeoutError:
                self._kill(pool)  # the stuck process must not keep a slot
                raise PermanentError(f"parsing took longer than {self._timeout:g}s",
                                     code="timeout") from None
            except BrokenProcessPool:
                self._kill(pool)
                raise TransientError("the parser process died", code="parser_crashed") from None

    def _kill(self, pool: ProcessPoolExecutor) -> None:
        """End `pool`'s processes (other calls running in it fail as `parser_crashed`, to be
        retried); the next call makes a new pool, unless one was made meanwhile."""
        if self._pool is pool:
            self._pool = None
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def _raise_for(outcome: dict[str, Any]) -> None:
    if "error" in outcome:
        raise PermanentError(outcome["message"], code=outcome["error"])


# --- in the parser process -------------------------------------------------------------------

PARENT_CHECK_SECONDS = 1.0


def _exit_with_parent(parent: int) -> None:
    """End this process soon after the worker that made it dies (kill -9 included): a pool's
    processes hold their own queue's write end, so they never see it close, and would idle on
    as orphans, each holding PyMuPDF's memory."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _open(path: str) -> Any:
    import pymupdf

    pymupdf.TOOLS.mupdf_display_errors(False)
    return pymupdf.open(path, filetype="pdf")


def _probe(path: str) -> dict[str, Any]:
    try:  # a malformed file may fail on open or later, e.g. a page tree claiming 2e9 pages
        with _open(path) as doc:
            if doc.needs_pass:
                return {"error": "encrypted", "message": "the PDF is password-protected"}
            if doc.page_count == 0:
                return {"error": "corrupt", "message": "the PDF has no readable pages"}
            return {"pages": doc.page_count, "title": (doc.metadata or {}).get("title") or ""}
    except Exception as exc:
        return {"error": "corrupt", "message": f"not a readable PDF: {exc}"[:300]}


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
