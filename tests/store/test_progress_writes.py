"""Batched progress writes (jobs.progress) against a real Postgres: lock cycles included."""

from __future__ import annotations

import asyncio

import asyncpg
from redis.asyncio import Redis

from longtask.broker.outbox import Outbox
from longtask.core.models import NewItem, Report
from longtask.store import items as item_store
from longtask.store import tasks as task_store
from longtask.worker.progress import ProgressWriter
from tests.support import wait_for


async def test_a_batch_that_postgres_aborts_to_break_a_deadlock_is_written_again(
        pool: asyncpg.Pool, redis: Redis) -> None:
    created = await task_store.create(pool, tenant="t", kind="k", params={},
                                      items=[NewItem({})])
    job = created.jobs[0]
    claim = await item_store.claim(pool, job.item_id, job.job_id, "w1", 60)
    assert claim is not None
    outbox = Outbox(redis)
    try:
        writer = ProgressWriter(pool, outbox)
        async with pool.acquire() as other:
            # another transaction takes the item first, then its task (as the reaper does with an
            # item whose late owner still reports), while the batch holds the task and waits for
            # the item: a cycle, which Postgres breaks by aborting the batch, the first to wait
            holding = other.transaction()
            await holding.start()
            await other.execute("UPDATE task_items SET updated_at = now() WHERE id = $1",
                                job.item_id)
            write = asyncio.create_task(writer.write(
                Report(claim.task_id, job.item_id, "w1", 50.0, None, "half way", {})))

            async def batch_waits() -> bool:
                return bool(await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%longtask_progress%'"))

            await wait_for(batch_waits, timeout=10, what="the batch to wait for the item's lock")
            await other.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", claim.task_id)
            await holding.commit()
        event = await asyncio.wait_for(write, timeout=10)
        assert event is not None and event.type == "progress"
        assert (event.data["percent"], event.data["message"]) == (50, "half way")
        stored = await pool.fetch(
            "SELECT seq, type FROM task_events WHERE task_id = $1 ORDER BY seq", claim.task_id)
        assert [(r["seq"], r["type"]) for r in stored][-1] == (event.seq, "progress")
    finally:  # no item left running: the next test waits for running items to end
        await item_store.finish(pool, job.item_id, "w1", "completed")
        # and no publishing task left behind: destroyed pending, with its Redis connection
        # open, it failed whichever test the garbage collector next ran in
        await outbox.flush()
