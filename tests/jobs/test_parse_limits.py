"""A hostile PDF fails alone: the parse limits per file, on a real worker and its parser
processes (issue 17)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from longtask.store import api_keys
from longtask.testing import pdfs
from longtask.testing.fake_openai import FakeOpenAI
from tests.jobs.test_ingest import ingest
from tests.support import fake_providers, wait_for, wait_status

GIB = 1024 ** 3


@pytest.mark.timeout(300)
async def test_a_pdf_past_the_parse_limit_fails_alone_while_another_tenants_file_completes(
        make_stack: Any, pool: asyncpg.Pool) -> None:
    with FakeOpenAI() as fake:
        stack = await make_stack(**fake_providers(fake), LONGTASK_PARSE_TIMEOUT="15",
                                 LONGTASK_PARSE_PROCESSES="2")
        worker = stack.workers[0]
        key_b = await api_keys.create(pool, "tenant-b", "parse-limits")
        async with httpx.AsyncClient(base_url=stack.web.url, timeout=60,
                                     headers={"Authorization": f"Bearer {key_b}"}) as tenant_b:
            # a page that takes minutes to parse on any machine, in flat memory
            bomb = await ingest(stack.client, [("bomb.pdf", pdfs.form_bomb_pdf(8))])

            async def bomb_parsing() -> Any:
                return await pool.fetchval(
                    "SELECT id FROM task_items WHERE task_id = $1 AND stage = 'parse'"
                    " AND status = 'running'", bomb["id"])

            await wait_for(bomb_parsing, timeout=60, what="the bomb to be parsing")

            async def both_parsers() -> set[int]:
                running = parser_processes(worker.pid)
                return running if len(running) == 2 else set()

            before = await wait_for(both_parsers, what="the worker's two parser processes")
            small = await ingest(tenant_b, [("report.pdf", pdfs.many_pages_pdf(60))])
            done_b = await wait_status(tenant_b, small["id"], {"completed", "failed"},
                                       timeout=120)
            done_a = await wait_status(stack.client, bomb["id"], {"completed", "failed"},
                                       timeout=180)
        [bomb_item] = done_a["items"]
        assert bomb_item["status"] == "failed" and bomb_item["error"]["code"] == "timeout"
        [item_b] = done_b["items"]
        assert done_b["status"] == "completed" and item_b["status"] == "completed"
        assert item_b["attempts"] == 1  # never failed as `parser_crashed` and retried
        assert item_b["result"]["pages"] == 60
        # B's file parsed while the bomb held the other parser process
        assert await pool.fetchval(
            "SELECT min(created_at) FROM task_events WHERE task_id = $1 AND type = 'progress'"
            " AND data->>'stage' = 'parse'", small["id"]) < await pool.fetchval(
            "SELECT finished_at FROM task_items WHERE task_id = $1", bomb["id"])
        after = await wait_for(both_parsers, what="the bomb's parser to be replaced")
        assert len(before & after) == 1  # the bomb's process was killed, and only it


@pytest.mark.timeout(600)
async def test_a_page_heavy_text_bomb_fails_too_large_with_the_worker_under_1_gb(
        make_stack: Any) -> None:
    with FakeOpenAI() as fake:
        # the default limits, but a parse time limit no loaded machine reaches first: the text
        # limit is what must stop it
        stack = await make_stack(**fake_providers(fake), LONGTASK_PARSE_TIMEOUT="3000")
        worker = stack.workers[0]
        peaks = TreePeaks(worker.pid)
        sampling = asyncio.create_task(peaks.sample_until_cancelled())
        try:
            # 2,000 pages of 200,000 characters each (400 million) in a 300 KB file
            bomb = await ingest(stack.client, [("text-bomb.pdf", pdfs.text_bomb_pdf())])
            done = await wait_status(stack.client, bomb["id"], {"completed", "failed"},
                                     timeout=540)
        finally:
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
        peaks.sample()
        [item] = done["items"]
        assert item["status"] == "failed" and item["error"]["code"] in {"too_large",
                                                                        "too_many_pages"}
        assert peaks.samples > 0 and len(peaks.hwm) >= 2  # the worker and its parser(s)
        assert peaks.rss < GIB, f"the worker's processes held {peaks.rss / 2**20:.0f} MB at once"
        # each process's own high-water mark, added up: an upper bound the sampling cannot miss
        assert sum(peaks.hwm.values()) < GIB, peaks.hwm


def parser_processes(worker: int) -> set[int]:
    """The worker's parser processes: its children started by multiprocessing's spawn."""
    return {pid for pid in _children(worker) if b"spawn_main" in _read(f"/proc/{pid}/cmdline")}


class TreePeaks:
    """The memory of a process and its descendants, from /proc: the largest total RSS seen in
    one sample, and each process's high-water mark (VmHWM)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.rss = 0
        self.hwm: dict[int, int] = {}
        self.samples = 0

    def sample(self) -> None:
        total = 0
        for pid in [self.root, *_descendants(self.root)]:
            status = _status(pid)
            total += status.get("VmRSS", 0)
            if "VmHWM" in status:
                self.hwm[pid] = max(self.hwm.get(pid, 0), status["VmHWM"])
        self.rss = max(self.rss, total)
        self.samples += 1

    async def sample_until_cancelled(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.1)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid` in bytes (empty once it is gone)."""
    values = {}
    for line in _read(f"/proc/{pid}/status").decode().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _read(f"/proc/{entry.name}/stat").decode()
            fields = stat.rsplit(")", 1)[1].split() if stat else []
            if fields and fields[0] != "Z" and int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in _children(todo.pop()) - found:
            found.add(child)
            todo.append(child)
    return found
