"""States only move forward, enforced by Postgres itself."""

from __future__ import annotations

import asyncpg
import pytest

from longtask.core.models import NewItem
from longtask.store import tasks as task_store


@pytest.mark.parametrize("end", ["completed", "failed", "canceled"])
async def test_a_terminal_task_cannot_move(pool: asyncpg.Pool, end: str) -> None:
    created = await task_store.create(pool, tenant="t", kind="k", params={},
                                      items=[NewItem({})])
    task_id = created.task.id
    assert await pool.execute("UPDATE tasks SET status = 'running' WHERE id = $1",
                              task_id) == "UPDATE 1"
    assert await pool.execute("UPDATE tasks SET status = $2 WHERE id = $1",
                              task_id, end) == "UPDATE 1"
    for back in {"pending", "running", "completed", "failed", "canceled"} - {end}:
        # even a bare UPDATE, not only our conditional ones, affects no row
        assert await pool.execute("UPDATE tasks SET status = $2 WHERE id = $1",
                                  task_id, back) == "UPDATE 0"
    assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", task_id) == end


async def test_running_never_goes_back_to_pending(pool: asyncpg.Pool) -> None:
    created = await task_store.create(pool, tenant="t", kind="k", params={}, items=[NewItem({})])
    await pool.execute("UPDATE tasks SET status = 'running' WHERE id = $1", created.task.id)
    assert await pool.execute("UPDATE tasks SET status = 'pending' WHERE id = $1",
                              created.task.id) == "UPDATE 0"


async def test_an_ended_task_takes_no_more_events(pool: asyncpg.Pool) -> None:
    created = await task_store.create(pool, tenant="t", kind="k", params={}, items=[NewItem({})])
    canceled = await task_store.cancel(pool, "t", created.task.id)
    assert [e.seq for e in canceled.events] == [2]
    from longtask.store import events

    assert await events.append(pool, created.task.id, "progress", {}) is None
    page = await events.catch_up(pool, "t", created.task.id, 0, 100)
    assert page is not None and page.ended
    assert [(e.seq, e.data.get("status")) for e in page.events] == \
        [(1, "pending"), (2, "canceled")]


async def test_retention_deletes_only_tasks_that_ended_long_ago(pool: asyncpg.Pool) -> None:
    old, recent, running = [
        (await task_store.create(pool, tenant="t", kind="k", params={}, items=[NewItem({})])).task
        for _ in range(3)
    ]
    for task in (old, recent):
        await task_store.cancel(pool, "t", task.id)
    await pool.execute("UPDATE tasks SET finished_at = now() - interval '31 days' WHERE id = $1",
                       old.id)
    await pool.execute("UPDATE tasks SET created_at = now() - interval '90 days' WHERE id = $1",
                       running.id)
    assert await task_store.purge_finished(pool, 30) == 1
    left = {r["id"] for r in await pool.fetch("SELECT id::text FROM tasks")}
    assert left == {recent.id, running.id}
    assert await pool.fetchval("SELECT count(*) FROM task_events WHERE task_id = $1",
                               old.id) == 0
