"""Every stored event has the time it was stored: the events that the store's writes return
(claim, progress, finish: the plpgsql functions; append; cancel) say the same time, to the
microsecond, as the row, and as a replay from Postgres; along a task's seq it never goes back."""

from __future__ import annotations

import asyncio
from datetime import timezone

import asyncpg

from longtask.core.events import Event
from longtask.core.models import NewItem, Report
from longtask.store import events as event_store
from longtask.store import items as item_store
from longtask.store import tasks as task_store
from tests.support import assert_event_times, utc_now, wait_for


async def test_every_write_returns_its_events_with_the_stored_time(pool: asyncpg.Pool) -> None:
    start = utc_now()
    created = await task_store.create(pool, tenant="t", kind="k", params={},
                                      items=[NewItem({}, "a"), NewItem({}, "b")])
    task_id = created.task.id
    returned: list[Event] = []
    first, second = created.jobs
    for job in (first, second):
        claim = await item_store.claim(pool, job.item_id, job.job_id, "w1", 60)
        assert claim is not None
        returned += claim.events  # the task's `running` status, then the item's
    reports = [Report(task_id, job.item_id, "w1", 50.0, "work", "half", {"pages": 1})
               for job in (first, second)]
    returned += [e for e in await item_store.progress(pool, reports) if e is not None]
    custom = await event_store.append(pool, task_id, "note", {"item": 0, "text": "hello"})
    assert custom is not None
    returned.append(custom)
    finished = await item_store.finish(pool, first.item_id, "w1", "completed", result={"n": 1})
    assert finished is not None
    returned += finished.events  # the item's end
    canceled = await task_store.cancel(pool, "t", task_id)
    returned += canceled.events
    end = utc_now()
    # no item left running: the next test waits for running items to end (no event: it ended)
    assert await item_store.finish(pool, second.item_id, "w1", "canceled") is not None

    assert [e.seq for e in returned] == list(range(2, 10))
    assert all(e.at is not None for e in returned)
    rows = {r["seq"]: r["created_at"] for r in await pool.fetch(
        "SELECT seq, created_at FROM task_events WHERE task_id = $1", task_id)}
    assert {e.seq: e.at for e in returned} == {seq: at for seq, at in rows.items() if seq > 1}
    page = await event_store.catch_up(pool, "t", task_id, 0, 100)
    assert page is not None
    replayed = {e.seq: e.at for e in page.events}
    assert replayed == rows  # the replay's times, from JSON, are the rows' to the microsecond
    assert_event_times(list(replayed), list(replayed.values()), start, end)
    assert all(at is not None and at.tzinfo == timezone.utc for at in replayed.values())


async def test_a_write_that_waited_for_the_task_lock_is_not_stored_earlier_than_the_one_before(
        pool: asyncpg.Pool) -> None:
    """A progress batch writes task X, then task Y. While it waits for X's lock, a later
    transaction stores an event of Y. The batch's event of Y comes after it in seq, and in time
    too: the time is read when the row is written, not when the batch began."""
    x, y = [await task_store.create(pool, tenant="t", kind="k", params={}, items=[NewItem({})])
            for _ in range(2)]
    claims = []
    for created in (x, y):
        job = created.jobs[0]
        claims.append(await item_store.claim(pool, job.item_id, job.job_id, "w1", 60))
    reports = [Report(c.task_id, c.item_id, "w1", 10.0, None, None, {}) for c in claims if c]
    async with pool.acquire() as holder:
        holding = holder.transaction()
        await holding.start()
        await holder.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", x.task.id)
        batch = asyncio.create_task(item_store.progress(pool, reports))

        async def batch_waits() -> bool:
            return bool(await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%longtask_progress_v2%'"))

        await wait_for(batch_waits, timeout=10, what="the batch to wait for task X's lock")
        meanwhile = await event_store.append(pool, y.task.id, "note", {})  # began later
        await holding.commit()
    stored = await asyncio.wait_for(batch, timeout=10)
    for claim in claims:  # no item left running: the next test waits for running items to end
        assert claim is not None
        await item_store.finish(pool, claim.item_id, "w1", "completed")
    later = stored[1]
    assert meanwhile is not None and later is not None and later.task_id == y.task.id
    assert later.seq == meanwhile.seq + 1
    assert meanwhile.at is not None and later.at is not None
    assert later.at >= meanwhile.at, (later.at, meanwhile.at)
