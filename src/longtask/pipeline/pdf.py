"""PDF probing and text extraction with PyMuPDF, in parser processes with limits per file.

PyMuPDF "does not support running on multiple threads - may crash Python", and parsing is CPU
work that would block the event loop; so every call here runs in a separate process (spawned,
not forked: the worker process has threads). Pages are extracted in batches, so a long document
streams through the worker instead of being held whole, and the caller can report progress,
checkpoint and honour a cancel between batches.

A hostile file must fail alone, so each file is bounded:
- time: `timeout` seconds of parsing per file, all its batches together (`ParseUsage` carries
  what it spent from batch to batch, and the caller keeps it in its checkpoint). Past it, the one
  process parsing that file is killed and replaced; the pool (pebble's) and the other files in
  flight go on.
- memory: each parser process runs under `RLIMIT_AS`; a file that needs more fails `too_large`.
- text: `max_chars` per document; past it the file fails `too_large` (and the parser stops
  extracting as soon as it knows, so the text never reaches the worker).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import resource
import signal
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from pebble import ProcessExpired, ProcessPool

from longtask.core.errors import PermanentError, TransientError

PDF_MAGIC = b"%PDF-"
MAX_PAGE_CHARS = 200_000  # a page with more text than this is cut (decompression bombs)
MAX_TITLE_CHARS = 500  # a title from the file's metadata is cut to this
# how long past a call's own time limit the worker waits before it gives up on the pool's answer:
# pebble enforces the limit itself (checked every 0.1 s, from the moment a process takes the
# call); this only covers a call the pool lost, so it leaves room for a process to be respawned
BACKSTOP_SECONDS = 60.0
OUT_OF_MEMORY = "out_of_memory"  # the parser process's word for it; the file's code is too_large


@dataclass(frozen=True)
class PdfInfo:
    pages: int
    title: str


@dataclass
class ParseUsage:
    """What parsing one file has spent so far: seconds in a parser process and characters of
    text. Kept in the item's checkpoint, so the limits hold per file across re-runs too."""

    seconds: float = 0.0
    chars: int = 0


def sniff(head: bytes) -> str | None:
    """The type of a file judged by its first bytes, never by its name."""
    # the PDF spec lets the header start within the first 1024 bytes
    if PDF_MAGIC in head[:1024]:
        return "application/pdf"
    return None


class PdfParser:
    """A small pool of parser processes, made on first use and shared by a worker's jobs."""

    def __init__(self, processes: int, *, timeout: float = 300.0, memory_mb: int = 1024,
                 max_chars: int = 10_000_000) -> None:
        self._processes = processes
        self._timeout = timeout  # seconds per file
        self._memory_mb = memory_mb  # per process
        self._max_chars = max_chars  # per file
        self._pool: ProcessPool | None = None
        # one call per process at a time, so a call starts at once in an idle process, and the
        # waiting for a process that another file holds does not count against this file's time
        self._slots = asyncio.Semaphore(processes)

    async def probe(self, path: str, max_pages: int, usage: ParseUsage) -> PdfInfo:
        """Page count and title; typed errors for encrypted, corrupt and over-long files."""
        outcome = await self._run(usage, _probe, path)
        if outcome["pages"] > max_pages:
            raise PermanentError(f"{outcome['pages']} pages; the limit is {max_pages}",
                                 code="too_many_pages")
        return PdfInfo(outcome["pages"], outcome["title"])

    async def pages(self, path: str, first: int, last: int, usage: ParseUsage) -> list[str]:
        """The text of pages first..last (1-based, inclusive); `too_large` once the file's text
        passes `max_chars`."""
        outcome = await self._run(usage, _extract, path, first, last,
                                  self._max_chars - usage.chars)
        texts = list(outcome["texts"])
        usage.chars += sum(len(t) for t in texts)
        return texts

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()  # ends the processes at once: nothing worth waiting for
            self._pool.join()
            self._pool = None

    async def _run(self, usage: ParseUsage, fn: Any, *args: Any) -> dict[str, Any]:
        left = self._timeout - usage.seconds
        if left <= 0:
            raise self._timed_out()
        async with self._slots:
            future = self._schedule(fn, args, left)
            try:
                outcome: dict[str, Any] = await asyncio.wait_for(
                    asyncio.wrap_future(future), left + BACKSTOP_SECONDS)
            except TimeoutError:  # pebble killed the process (or the backstop gave up on it)
                future.cancel()  # kills the process if it still runs
                usage.seconds = self._timeout
                raise self._timed_out() from None
            except ProcessExpired as exc:  # this file's process died; no other file's did
                raise TransientError(f"the parser process died while parsing this file "
                                     f"(exit code {exc.exitcode})", code="parser_crashed") from None
            except BrokenProcessPool:
                self._drop_pool()
                raise TransientError("the parser pool broke", code="parser_crashed") from None
            except Exception as exc:  # e.g. a result that could not be sent back
                raise TransientError(f"the parser failed: {type(exc).__name__}",
                                     code="parser_crashed") from None
        usage.seconds += float(outcome.get("seconds", 0.0))
        if "error" in outcome:
            if outcome["error"] == OUT_OF_MEMORY:
                raise PermanentError(f"parsing this file needs more than {self._memory_mb} MB "
                                     "of memory", code="too_large")
            if outcome["error"] == "too_large":
                raise PermanentError(f"the document has more than {self._max_chars:,} characters "
                                     "of text", code="too_large")
            raise PermanentError(outcome["message"], code=outcome["error"])
        return outcome

    def _schedule(self, fn: Any, args: tuple[Any, ...], timeout: float) -> Future[Any]:
        """Hand one call to an idle process; a pool that broke (e.g. a process that could not
        start) is replaced once."""
        for attempt in (1, 2):
            if self._pool is None:
                self._pool = ProcessPool(
                    self._processes, context=multiprocessing.get_context("spawn"),
                    initializer=_start_parser, initargs=(os.getpid(), self._memory_mb))
            try:
                return self._pool.schedule(fn, args, timeout=timeout)
            except RuntimeError:  # "the pool is not running"
                self._drop_pool()
                if attempt == 2:
                    raise TransientError("the parser processes cannot start",
                                         code="parser_crashed") from None
        raise AssertionError("unreachable")

    def _drop_pool(self) -> None:
        """Forget a broken pool; its processes are ended in a thread, not on the event loop."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
            threading.Thread(target=pool.join, name="parser-pool-stop", daemon=True).start()

    def _timed_out(self) -> PermanentError:
        return PermanentError(f"parsing took longer than {self._timeout:g}s",
                              code="timeout")


# --- in the parser process -------------------------------------------------------------------

PARENT_CHECK_SECONDS = 1.0
_ALLOCATION_FAILED = re.compile(r"\b(?:m|c|re)alloc\b.*\bfailed\b|out of memory", re.IGNORECASE)


def _start_parser(parent: int, memory_mb: int) -> None:
    """Set up a parser process: its memory limit, death on SIGTERM (pebble ends a process that
    ran out of time with SIGTERM, and MuPDF's C code would not let a Python handler run), an
    exit with the worker, and PyMuPDF loaded (not at the first file's expense)."""
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _exit_with_parent(parent)
    import pymupdf

    pymupdf.TOOLS.mupdf_display_errors(False)


def _exit_with_parent(parent: int) -> None:
    """End this process soon after the worker that made it dies (kill -9 included): a pool's
    processes hold their own pipe's write end, so they never see it close, and would idle on
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


def _timed(call: Any) -> dict[str, Any]:
    """`call()`'s outcome with the seconds it took; running out of memory (Python's or
    MuPDF's, under RLIMIT_AS) is an outcome too, not a crash."""
    started = time.monotonic()
    try:
        outcome: dict[str, Any] = call()
    except MemoryError:
        outcome = {"error": OUT_OF_MEMORY, "message": "out of memory"}
    outcome["seconds"] = time.monotonic() - started
    return outcome


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or bool(_ALLOCATION_FAILED.search(str(exc)))


def _probe(path: str) -> dict[str, Any]:
    def probe() -> dict[str, Any]:
        try:  # a malformed file may fail on open or later, e.g. a page tree claiming 2e9 pages
            with _open(path) as doc:
                if doc.needs_pass:
                    return {"error": "encrypted", "message": "the PDF is password-protected"}
                if doc.page_count == 0:
                    return {"error": "corrupt", "message": "the PDF has no readable pages"}
                title = (doc.metadata or {}).get("title") or ""
                return {"pages": doc.page_count, "title": title[:MAX_TITLE_CHARS]}
        except Exception as exc:
            if _out_of_memory(exc):
                raise MemoryError from None
            return {"error": "corrupt", "message": f"not a readable PDF: {exc}"[:300]}

    return _timed(probe)


def _extract(path: str, first: int, last: int, max_chars: int) -> dict[str, Any]:
    def extract() -> dict[str, Any]:
        try:
            with _open(path) as doc:
                texts = []
                chars = 0
                for number in range(first - 1, min(last, doc.page_count)):
                    text = doc.load_page(number).get_text("text", sort=True)[:MAX_PAGE_CHARS]
                    chars += len(text)
                    if chars > max_chars:  # stop here: the rest never leaves this process
                        return {"error": "too_large", "message": "too much text"}
                    texts.append(text)
                return {"texts": texts}
        except Exception as exc:
            if _out_of_memory(exc):
                raise MemoryError from None
            return {"error": "corrupt", "message": f"page {first}-{last} unreadable: {exc}"[:300]}

    return _timed(extract)
