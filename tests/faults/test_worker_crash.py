"""kill -9 and SIGTERM of workers mid-batch: every task completes, no file is processed to
completion twice, no chunk is duplicated, nothing is left running."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import asyncpg

from longtask.testing import pdfs
from longtask.testing.fake_openai import FakeOpenAI
from tests.support import wait_for, wait_status

FILES = 20


def batch(seed: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"doc-{seed}-{i}.pdf", pdfs.many_pages_pdf(4 + i % 5, seed=seed * 100 + i),
                       "application/pdf")) for i in range(FILES)]


async def assert_exactly_once(pool: asyncpg.Pool, task_id: str) -> None:
    """Each item ended once; each document has one generation of chunks, each chunk once."""
    ends = await pool.fetch(
        "SELECT data->>'item' AS item, count(*) AS n FROM task_events WHERE task_id = $1"
        " AND type = 'item' AND data->>'status' IN ('completed', 'failed', 'canceled')"
        " GROUP BY 1", task_id)
    assert len(ends) == FILES and all(r["n"] == 1 for r in ends)
    chunks = await pool.fetch(
        "SELECT d.id, d.chunk_count, count(c.*) AS n, count(DISTINCT c.generation) AS g,"
        " count(DISTINCT c.idx) AS i FROM documents d JOIN chunks c ON c.document_id = d.id"
        " WHERE d.task_id = $1 GROUP BY d.id, d.chunk_count", task_id)
    assert len(chunks) == FILES
    assert all(r["n"] == r["chunk_count"] == r["i"] and r["g"] == 1 for r in chunks)
    seqs = [r["seq"] for r in await pool.fetch(
        "SELECT seq FROM task_events WHERE task_id = $1 ORDER BY seq", task_id)]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap in the durable history
    assert await pool.fetchval("SELECT count(*) FROM task_items WHERE status = 'running'") == 0


async def test_kill_9_a_worker_five_times_during_a_batch(make_stack: Any,
                                                        pool: asyncpg.Pool) -> None:
    rng = random.Random(7)
    with FakeOpenAI(latency=0.15) as fake:  # each file takes a moment: kills land mid-file
        stack = await make_stack(
            workers=2, LONGTASK_LLM_URL=fake.base_url, LONGTASK_EMBED_URL=fake.base_url,
            LONGTASK_EMBED_MODEL="fake", LONGTASK_EMBED_BATCH="2", LONGTASK_LEASE_SECONDS="3",
            LONGTASK_REAPER_SECONDS="1", LONGTASK_WORKER_CONCURRENCY="3")
        task_id = (await stack.client.post("/documents", files=batch(1))).json()["id"]
        resumed: list[float] = []
        for kill in range(5):
            await asyncio.sleep(rng.uniform(0.5, 2.0))  # a random point of the batch
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
        crashed = await pool.fetchval(
            "SELECT count(*) FROM task_events WHERE task_id = $1 AND type = 'item'"
            " AND data->'error'->>'code' = 'lease_expired'", task_id)
        assert crashed >= 1  # the kills did land on running items
        assert max(resumed) < 15  # lease 3 s + reaper 1 s, well before ARQ's job_timeout
        print(f"kills: 5, items handed on: {crashed}, time to resume: "
              f"{', '.join(f'{r:.1f}s' for r in resumed)}")


async def test_sigterm_a_worker_mid_batch_loses_nothing(make_stack: Any,
                                                        pool: asyncpg.Pool) -> None:
    with FakeOpenAI(latency=0.15) as fake:
        stack = await make_stack(
            workers=1, LONGTASK_LLM_URL=fake.base_url, LONGTASK_EMBED_URL=fake.base_url,
            LONGTASK_EMBED_MODEL="fake", LONGTASK_EMBED_BATCH="2", LONGTASK_SHUTDOWN_GRACE="1",
            LONGTASK_WORKER_CONCURRENCY="3")
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
