"""The parser processes' limits per file: time, memory and text, each failing that file alone."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from longtask.core.errors import PermanentError
from longtask.pipeline.pdf import ParseUsage, PdfParser
from longtask.testing import pdfs
from tests.support import wait_for


@pytest.fixture
async def parsers() -> AsyncIterator[list[PdfParser]]:
    """Parsers a test makes (each with processes of its own), closed after it."""
    made: list[PdfParser] = []
    yield made
    for parser in made:
        parser.close()


def write(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


async def parse(parser: PdfParser, path: str, usage: ParseUsage) -> list[str]:
    """All the pages of a file, in batches of 20, as the ingest kind reads them."""
    info = await parser.probe(path, 5000, usage)
    texts: list[str] = []
    for first in range(1, info.pages + 1, 20):
        texts += await parser.pages(path, first, min(first + 19, info.pages), usage)
    return texts


def spawned_children() -> set[int]:
    """This process's children started by multiprocessing's spawn (parser processes)."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes() if stat else b""
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split() if stat else []
        if fields and int(fields[1]) == os.getpid() and fields[0] != "Z" \
                and b"spawn_main" in cmdline:
            found.add(int(entry))
    return found


async def test_a_timeout_kills_only_that_files_parser_process(tmp_path: Path,
                                                              parsers: list[PdfParser]) -> None:
    others = spawned_children()
    parser = PdfParser(2, timeout=5)
    parsers.append(parser)
    bomb = write(tmp_path, "bomb.pdf", pdfs.form_bomb_pdf(8))  # one page, minutes to parse
    good = write(tmp_path, "good.pdf", pdfs.many_pages_pdf(20))
    await parse(parser, good, ParseUsage())  # starts the processes

    async def both_up() -> set[int]:
        running = spawned_children() - others
        return running if len(running) == 2 else set()

    before = await wait_for(both_up, what="two parser processes")
    bombing = asyncio.create_task(parse(parser, bomb, usage := ParseUsage()))
    texts = await parse(parser, good, ParseUsage())  # beside the bomb, in the other process
    assert len(texts) == 20 and "Page 20." in texts[-1]
    with pytest.raises(PermanentError) as failed:
        await bombing
    assert failed.value.code == "timeout" and usage.seconds == 5
    after = await wait_for(both_up, what="the killed parser to be replaced")
    assert len(before & after) == 1  # the bomb's process was replaced; the other one lives on
    assert len(await parse(parser, good, ParseUsage())) == 20  # and the pool goes on


async def test_the_time_limit_is_per_file_across_its_batches(tmp_path: Path,
                                                             parsers: list[PdfParser]) -> None:
    parser = PdfParser(1, timeout=8)
    parsers.append(parser)
    # 2,000 pages of about 0.05 s each: every batch of 20 takes far less than the limit, the
    # whole file far more
    slow = write(tmp_path, "slow.pdf", pdfs.form_bomb_pdf(4, pages=2000))
    usage = ParseUsage()
    batches = 0
    info = await parser.probe(slow, 5000, usage)
    with pytest.raises(PermanentError) as failed:
        for first in range(1, info.pages + 1, 20):
            await parser.pages(slow, first, first + 19, usage)
            batches += 1
    assert failed.value.code == "timeout" and usage.seconds >= 8
    assert 1 <= batches < 100  # it failed part-way, after whole batches went through


async def test_the_time_limit_counts_what_earlier_runs_spent(tmp_path: Path,
                                                             parsers: list[PdfParser]) -> None:
    parser = PdfParser(1, timeout=30)
    parsers.append(parser)
    good = write(tmp_path, "good.pdf", pdfs.many_pages_pdf(30))
    usage = ParseUsage()
    await parse(parser, good, usage)
    assert 0 < usage.seconds < 30 and usage.chars > 30 * 1000
    spent = ParseUsage(seconds=30.0)  # as a re-run reads it from the item's checkpoint
    with pytest.raises(PermanentError) as failed:
        await parser.pages(good, 1, 20, spent)
    assert failed.value.code == "timeout"


async def test_a_file_that_needs_too_much_memory_fails_alone(tmp_path: Path,
                                                             parsers: list[PdfParser]) -> None:
    parser = PdfParser(1, timeout=120, memory_mb=320)
    parsers.append(parser)
    heavy = write(tmp_path, "heavy.pdf", pdfs.bomb_pdf(800_000))  # about 1 GB to extract
    with pytest.raises(PermanentError) as failed:
        await parse(parser, heavy, ParseUsage())
    assert failed.value.code == "too_large" and "320 MB" in str(failed.value)
    good = write(tmp_path, "good.pdf", pdfs.many_pages_pdf(3))
    assert len(await parse(parser, good, ParseUsage())) == 3  # the same process parses on


async def test_text_past_the_limit_per_document_fails_too_large(tmp_path: Path,
                                                                parsers: list[PdfParser]) -> None:
    parser = PdfParser(1, max_chars=500_000)
    parsers.append(parser)
    bomb = write(tmp_path, "text-bomb.pdf", pdfs.text_bomb_pdf(40, 50_000))
    usage = ParseUsage()
    with pytest.raises(PermanentError) as failed:
        await parse(parser, bomb, usage)
    assert failed.value.code == "too_large" and "500,000 characters" in str(failed.value)
    assert usage.chars == 0  # the first batch already passed it: none of its text came back
    small = write(tmp_path, "small.pdf", pdfs.many_pages_pdf(25))
    usage = ParseUsage()
    assert len(await parse(parser, small, usage)) == 25 and 0 < usage.chars <= 500_000

