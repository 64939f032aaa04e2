"""The webhook outbox: a row written by the transaction that ends a task, however it ends, for
the queues with webhooks only; claims that workers never share; stale attempts record nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from longtask.core.models import NewItem, Task
from longtask.store import items as item_store
from longtask.store import tasks as task_store
from longtask.store import webhooks as webhook_store

QUEUE = "longtask:outbox-test"  # its own: which queues have webhooks outlives a test's clean-up


@pytest.fixture
async def hooked(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """A queue whose tasks get webhooks."""
    await webhook_store.register(pool, QUEUE, True)
    try:
        yield QUEUE
    finally:
        await webhook_store.register(pool, QUEUE, False)


async def _task(pool: asyncpg.Pool, queue: str = QUEUE, tenant: str = "t") -> Task:
    created = await task_store.create(pool, tenant=tenant, kind="k", params={},
                                      items=[NewItem({})], queue=queue)
    return created.task


async def _outbox(pool: asyncpg.Pool) -> dict[str, tuple[str, str]]:
    rows = await pool.fetch("SELECT task_id::text, tenant, event FROM webhook_deliveries")
    return {r["task_id"]: (r["tenant"], r["event"]) for r in rows}


async def test_each_way_a_task_ends_writes_one_row(pool: asyncpg.Pool, hooked: str) -> None:
    canceled = await _task(pool, tenant="a")
    await task_store.cancel(pool, "a", canceled.id)
    again = await task_store.cancel(pool, "a", canceled.id)  # ended already: no second row
    assert again.events == []
    late = await _task(pool)
    await pool.execute("UPDATE tasks SET deadline_at = now() - interval '1 second'"
                       " WHERE id = $1", late.id)
    await task_store.expire_deadlines(pool, QUEUE)
    assert await _outbox(pool) == {canceled.id: ("a", "task.canceled"),
                                   late.id: ("t", "task.failed")}

    for outcome in ("completed", "failed"):  # the last item ends the task
        created = await task_store.create(pool, tenant="t", kind="k", params={},
                                          items=[NewItem({})], queue=QUEUE)
        [job] = created.jobs
        assert await item_store.claim(pool, job.item_id, job.job_id, "w1", 30) is not None
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await conn.fetchval("SELECT longtask_finish_v2($1, 'w1', $2, NULL, NULL)",
                                job.item_id, outcome)
            # the row is the transaction's: nobody else sees it before the commit
            assert created.task.id not in await _outbox(pool)
            await tx.commit()
        assert (await _outbox(pool))[created.task.id] == ("t", f"task.{outcome}")

    elsewhere = await _task(pool, queue="longtask:no-hooks")  # a queue without webhooks
    await task_store.cancel(pool, "t", elsewhere.id)
    assert elsewhere.id not in await _outbox(pool)
    assert len(await _outbox(pool)) == 4


async def test_claims_are_never_shared_and_a_stale_attempt_records_nothing(
        pool: asyncpg.Pool, hooked: str) -> None:
    for _ in range(5):
        task = await _task(pool)
        await task_store.cancel(pool, "t", task.id)
    # two workers at once: each row goes to one of them
    first, second = await asyncio.gather(*(webhook_store.claim(pool, QUEUE, 3, 60)
                                           for _ in range(2)))
    assert len(first) + len(second) == 5
    assert not {d.id for d in first} & {d.id for d in second}
    assert await webhook_store.claim(pool, QUEUE, 10, 60) == []  # held while they are sent
    assert await webhook_store.claim(pool, "longtask:other", 10, 0) == []

    taken, *_ = first
    assert taken.attempt == 1 and taken.body is None
    assert await webhook_store.keep_body(pool, taken, "one") == "one"
    assert await webhook_store.keep_body(pool, taken, "two") == "one"  # the first one stays
    # that worker froze past its claim: another takes the row, for attempt 2
    await pool.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE id = $1",
                       taken.id)
    [again] = await webhook_store.claim(pool, QUEUE, 10, 60)
    assert (again.id, again.attempt, again.body) == (taken.id, 2, "one")
    assert not await webhook_store.delivered(pool, taken, 204)  # the frozen one records nothing
    assert not await webhook_store.retry_later(pool, taken, 1, 500, "late")
    assert await webhook_store.retry_later(pool, again, 3600, 500, "the receiver answered 500")
    row = await pool.fetchrow("SELECT status, attempts, last_status, last_error,"
                              " next_attempt_at > now() + interval '59 minutes' AS later"
                              " FROM webhook_deliveries WHERE id = $1", taken.id)
    assert tuple(row) == ("pending", 2, 500, "the receiver answered 500", True)

    done = second[0]
    assert await webhook_store.delivered(pool, done, 204)
    assert not await webhook_store.give_up(pool, done, 500, "after all")  # delivered stays
    await pool.execute("UPDATE webhook_deliveries SET finished_at = now() - interval '31 days'"
                       " WHERE id = $1", done.id)
    assert await webhook_store.purge(pool, 30) == 1
    assert await pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 4
