"""kill -9 and SIGTERM of workers mid-batch: every task completes, no file is processed to
completion twice, no chunk is duplicated, nothing is left running."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from longtask.testing import pdfs
from longtask.testing.fake_openai import FakeOpenAI
from tests.support import assert_no_slot_held, fake_providers, wait_for, wait_status

FILES = 20


def batch(seed: int, files: int = FILES) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"doc-{seed}-{i}.pdf", pdfs.many_pages_pdf(4 + i % 5, seed=seed * 100 + i),
                       "application/pdf")) for i in range(files)]


async def assert_exactly_once(pool: asyncpg.Pool, task_id: str, files: int = FILES) -> None:
    """Each item ended once; each document has one generation of chunks, each chunk once."""
    ends = await pool.fetch(
        "SELECT data->>'item' AS item, count(*) AS n FROM task_events WHERE task_id = $1"
        " AND type = 'item' AND data->>'status' IN ('completed', 'failed', 'canceled')"
        " GROUP BY 1", task_id)
    assert len(ends) == files and all(r["n"] == 1 for r in ends)
    chunks = await pool.fetch(
        "SELECT d.id, d.chunk_count, count(c.*) AS n, count(DISTINCT c.generation) AS g,"
        " count(DISTINCT c.idx) AS i FROM documents d JOIN chunks c ON c.document_id = d.id"
        " WHERE d.task_id = $1 GROUP BY d.id, d.chunk_count", task_id)
    assert len(chunks) == files
    assert all(r["n"] == r["chunk_count"] == r["i"] and r["g"] == 1 for r in chunks)
    seqs = [r["seq"] for r in await pool.fetch(
        "SELECT seq FROM task_events WHERE task_id = $1 ORDER BY seq", task_id)]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap in the durable history
    assert await pool.fetchval("SELECT count(*) FROM task_items WHERE status = 'running'") == 0


async def test_kill_9_a_worker_five_times_during_a_batch(make_stack: Any,
                                                        pool: asyncpg.Pool) -> None:
    await kill_9_a_worker_five_times_during_a_batch(make_stack, pool)


async def kill_9_a_worker_five_times_during_a_batch(make_stack: Any, pool: asyncpg.Pool) -> None:
    """The batch completes, each file once, with no gap in its events, on the stack that
    `make_stack` makes (tests/deploy passes one behind PgBouncer)."""
    rng = random.Random(7)
    with FakeOpenAI(latency=0.15) as fake:  # each file takes a moment: kills land mid-file
        stack = await make_stack(
            workers=2, **fake_providers(fake, LONGTASK_LEASE_SECONDS="3",
                                        LONGTASK_REAPER_SECONDS="1"))
        task_id = (await stack.client.post("/documents", files=batch(1))).json()["id"]
        resumed: list[float] = []
        points = sorted(rng.uniform(5, 80) for _ in range(5))  # random points of the batch
        for kill, point in enumerate(points):

            async def reached(percent: float = point) -> bool:
                return bool(await pool.fetchval(
                    "SELECT progress >= $2 FROM tasks WHERE id = $1", task_id, percent))

            await wait_for(reached, timeout=60, what=f"the batch to reach {point:.0f}%")
            victim = stack.workers[kill % 2]
            dead = f"%:{victim.pid}:%"
            owned = await pool.fetch(
                "SELECT id FROM task_items WHERE status = 'running' AND lease_owner LIKE $1",
                dead)
            victim.kill()
            killed_at = time.monotonic()
            victim.start()
            if owned:  # the time until another run of one of its items starts

                async def taken_again(item: Any = owned[0]["id"], dead: str = dead) -> bool:
                    return bool(await pool.fetchval(
                        "SELECT status <> 'running' OR lease_owner NOT LIKE $2 FROM task_items"
                        " WHERE id = $1", item, dead))

                await wait_for(taken_again, timeout=30, what="the dead worker's item to move on")
                resumed.append(time.monotonic() - killed_at)
        task = await wait_status(stack.client, task_id, {"completed", "failed"}, timeout=180)
        assert task["status"] == "completed" and task["items_failed"] == 0
        await assert_exactly_once(pool, task_id)
        # each killed item's job gave its slot back (the reaper retired it), and only once
        redis = Redis.from_url(stack.env["REDIS_URL"])
        try:
            await assert_no_slot_held(redis, stack.env["LONGTASK_QUEUE"], "tenant-a")
        finally:
            await redis.aclose()
        crashed = await pool.fetchval(
            "SELECT count(*) FROM task_events WHERE task_id = $1 AND type = 'item'"
            " AND data->'error'->>'code' = 'lease_expired'", task_id)
        assert crashed >= 1  # the kills did land on running items
        assert max(resumed) < 15  # lease 3 s + reaper 1 s, well before ARQ's job_timeout
        print(f"kills: 5 at {', '.join(f'{p:.0f}%' for p in points)}; items handed on: {crashed};"
              f" events: {task['last_seq']}, gaps: 0; time to resume: "
              f"{', '.join(f'{r:.1f}s' for r in resumed)}")


async def test_sigterm_a_worker_mid_batch_loses_nothing(make_stack: Any,
                                                        pool: asyncpg.Pool) -> None:
    with FakeOpenAI(latency=0.15) as fake:
        stack = await make_stack(
            workers=1, **fake_providers(fake, LONGTASK_SHUTDOWN_GRACE="1"))
        task_id = (await stack.client.post("/documents", files=batch(2))).json()["id"]

        async def some_done() -> bool:
            return bool(await pool.fetchval(
                "SELECT items_done > 2 FROM tasks WHERE id = $1", task_id))

        await wait_for(some_done, timeout=60, what="a few files to finish")
        worker = stack.workers[0]
        assert worker.terminate() == 0  # a clean exit within the grace period
        assert await pool.fetchval(
            "SELECT count(*) FROM task_items WHERE task_id = $1 AND status = 'running'",
            task_id) == 0  # handed back at once, not left to a lease
        worker.start()
        task = await wait_status(stack.client, task_id, {"completed", "failed"}, timeout=180)
        assert task["status"] == "completed" and task["items_failed"] == 0
        await assert_exactly_once(pool, task_id)


# Known issue (see the notes of issue 4): in some full-suite runs the other worker's Postgres
# calls block for 60-100 s after the freeze before the batch goes on; until that is found, the
# test allows the batch that long rather than failing on the time it takes.
@pytest.mark.timeout(330)
async def test_a_stalled_worker_that_wakes_up_writes_nothing(make_stack: Any,
                                                             pool: asyncpg.Pool) -> None:
    with FakeOpenAI(latency=0.3) as fake:
        stack = await make_stack(
            workers=2, **fake_providers(fake, concurrency=2, LONGTASK_LEASE_SECONDS="2",
                                        LONGTASK_REAPER_SECONDS="1"))
        task_id = (await stack.client.post("/documents", files=batch(8, 6))).json()["id"]
        stalled = stack.workers[0]
        mine = f"%:{stalled.pid}:%"

        async def owns_one() -> Any:
            return await pool.fetchval(
                "SELECT id FROM task_items WHERE task_id = $1 AND status = 'running'"
                " AND lease_owner LIKE $2 LIMIT 1", task_id, mine)

        item = await wait_for(owns_one, timeout=60, what="the first worker to hold an item")
        os.kill(stalled.pid, signal.SIGSTOP)  # a long GC pause, a frozen VM...
        try:
            frozen_at = time.monotonic()
            task = await wait_status(stack.client, task_id, {"completed", "failed"}, timeout=270)
            print(f"batch done {time.monotonic() - frozen_at:.1f}s after the freeze")
        finally:
            os.kill(stalled.pid, signal.SIGCONT)
        assert task["status"] == "completed"
        ran_twice = await pool.fetchval(
            "SELECT count(*) FROM task_events WHERE task_id = $1 AND type = 'item'"
            " AND data->>'status' = 'running' AND data->>'item' = ("
            " SELECT idx::text FROM task_items WHERE id = $2)", task_id, item)
        assert ran_twice == 2  # another worker took the stalled one's item

        async def gave_up() -> bool:  # woken, it sees the lease is gone and stops
            return "abandoned: lease lost" in stalled.tail(400)

        await wait_for(gave_up, timeout=20, what="the woken worker to give its item up")
        await assert_exactly_once(pool, task_id, files=6)  # and it wrote nothing after waking


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_a_killed_workers_parser_processes_exit_with_it(make_stack: Any) -> None:
    with FakeOpenAI() as fake:
        stack = await make_stack(workers=1, **fake_providers(fake))
        task_id = (await stack.client.post("/documents", files=batch(3, files=1))).json()["id"]
        await wait_status(stack.client, task_id, {"completed"}, timeout=60)
        worker = stack.workers[0]
        parsers = [pid for pid in _children(worker.pid) if _running(pid)]
        assert parsers, "the worker parsed a PDF, so it has parser processes"
        worker.kill()

        async def all_gone() -> bool:
            return not any(_running(pid) for pid in parsers)

        await wait_for(all_gone, timeout=15, what=f"parser processes {parsers} to exit")
