"""Fair dispatch across tenants: a small tenant's item goes ahead of a big tenant's backlog, and
no tenant runs more items at once than its cap (or a kind's).

The assertions count what happened in order (which items started before which), never how long
it took: a busy machine slows everything down alike and changes no order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from longtask.store import api_keys
from tests.support import assert_no_slot_held, wait_for, wait_status


@contextlib.asynccontextmanager
async def tenant_client(stack: Any, pool: asyncpg.Pool, tenant: str) -> AsyncIterator[Any]:
    key = await api_keys.create(pool, tenant, "fairness")
    async with httpx.AsyncClient(base_url=stack.web.url, timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        yield client


async def submit(client: httpx.AsyncClient, items: int, seconds: float,
                 kind: str = "test.turnover") -> str:
    answer = await client.post("/tasks", json={"kind": kind, "params": {
        "items": items, "seconds": seconds}})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


async def running(pool: asyncpg.Pool, tenant: str) -> int:
    return int(await pool.fetchval(
        "SELECT count(*) FROM task_items WHERE tenant = $1 AND status = 'running'", tenant))


async def most_seen(redis: Redis, key: str) -> int:
    """The most items that ran at once, as the test kind counted them (`seen:...`)."""
    return max((int(n) for n in await redis.lrange(key, 0, -1)), default=0)


async def test_the_small_tenant_goes_first(make_stack: Any, pool: asyncpg.Pool,
                                          redis: Redis) -> None:
    # 4 slots; A's cap (16 by default) does not bind: only the turns keep B from waiting
    stack = await make_stack(workers=1, LONGTASK_WORKER_CONCURRENCY="4")
    big = await submit(stack.client, 40, 1.0)  # ten turnovers of the fleet

    async def full() -> bool:
        return await running(pool, "tenant-a") == 4

    await wait_for(full, timeout=30, what="A's items to fill every slot")
    async with tenant_client(stack, pool, "tenant-b") as b:
        small = await submit(b, 1, 0.1)
        await wait_status(b, small, {"completed"}, timeout=120)
    row = await pool.fetchrow(
        "SELECT t.created_at AS submitted, i.started_at AS started FROM tasks t"
        " JOIN task_items i ON i.task_id = t.id WHERE t.id = $1", small)
    ahead = await pool.fetchval(
        "SELECT count(*) FROM task_items WHERE task_id = $1 AND started_at > $2"
        " AND started_at < $3", big, row["submitted"], row["started"])
    behind = await pool.fetchval(
        "SELECT count(*) FROM task_items WHERE task_id = $1"
        " AND (started_at IS NULL OR started_at > $2)", big, row["started"])
    # first come first served, B would start after all of A's 36 waiting items; with turns it
    # waits for the jobs already handed to ARQ (4 spare) and a turn or two of A's
    print(f"A's items started between B's submit and B's start: {ahead}; after B: {behind}")
    assert ahead <= 8, ahead
    assert behind >= 24, behind
    await wait_status(stack.client, big, {"completed"}, timeout=120)
    await assert_no_slot_held(redis, "longtask:stack0", "tenant-a")


async def test_a_tenant_never_runs_more_than_its_cap(make_stack: Any, pool: asyncpg.Pool,
                                                    redis: Redis) -> None:
    stack = await make_stack(workers=1, LONGTASK_WORKER_CONCURRENCY="6",
                             LONGTASK_TENANT_CONCURRENCY="3")
    big = await submit(stack.client, 12, 1.0)
    sampled: list[int] = []

    async def done() -> bool:  # sampled all along, in the background
        sampled.append(await running(pool, "tenant-a"))
        return (await pool.fetchval("SELECT status FROM tasks WHERE id = $1", big)) == "completed"

    sampler = asyncio.create_task(wait_for(done, timeout=120, what="A's batch to complete"))

    async def at_cap() -> bool:
        return await running(pool, "tenant-a") == 3

    await wait_for(at_cap, timeout=30, what="A to reach its cap")
    async with tenant_client(stack, pool, "tenant-b") as b:
        small = await submit(b, 1, 0.1)  # the slots A may not take are B's at once
        await wait_status(b, small, {"completed"}, timeout=60)
        started = await pool.fetchval(
            "SELECT started_at FROM task_items WHERE task_id = $1", small)
    await sampler
    assert max(sampled) == 3, sampled
    assert await most_seen(redis, "seen:tenant-a") == 3  # reached, never passed
    waiting = await pool.fetchval(
        "SELECT count(*) FROM task_items WHERE task_id = $1 AND started_at > $2", big, started)
    assert waiting >= 3  # B did not wait for A's batch: A still had items to start
    await assert_no_slot_held(redis, "longtask:stack0", "tenant-a")


async def test_a_kind_with_its_own_cap_holds_up_only_its_own_items(make_stack: Any,
                                                                   pool: asyncpg.Pool,
                                                                   redis: Redis) -> None:
    stack = await make_stack(workers=1, LONGTASK_WORKER_CONCURRENCY="6",
                             LONGTASK_KIND_CONCURRENCY="test.turnover=2")
    slow = await submit(stack.client, 6, 2.0)
    quick = (await stack.client.post("/tasks", json={"kind": "test.fanout", "params": {
        "items": [{"name": str(i)} for i in range(4)]}})).json()["id"]
    await wait_status(stack.client, slow, {"completed"}, timeout=60)
    await wait_status(stack.client, quick, {"completed"}, timeout=60)
    third = await pool.fetchval(  # it could start only once one of the first two had ended
        "SELECT started_at FROM task_items WHERE task_id = $1 ORDER BY started_at OFFSET 2"
        " LIMIT 1", slow)
    later = await pool.fetchval(
        "SELECT count(*) FROM task_items WHERE task_id = $1 AND started_at > $2", quick, third)
    assert later == 0  # the other kind went past the capped kind's waiting items
    assert await most_seen(redis, "seen:tenant-a:test.turnover") == 2
    await assert_no_slot_held(redis, "longtask:stack0", "tenant-a")


async def test_a_task_past_its_deadline_leaves_its_tenants_line(make_stack: Any) -> None:
    # A's only slot is held; a batch waits behind it, then runs out of time before its turn
    stack = await make_stack(workers=1, LONGTASK_TENANT_CONCURRENCY="1")
    holder = (await stack.client.post("/tasks", json={"kind": "test.forever"})).json()["id"]
    await wait_status(stack.client, holder, {"running"})
    late = await stack.client.post("/tasks", json={"kind": "test.fanout", "deadline_seconds": 1,
                                                   "params": {"items": [{}, {}, {}]}})
    assert (await stack.client.get("/stats")).json()["queued"] == 4
    task = await wait_status(stack.client, late.json()["id"], {"failed"}, timeout=30)
    assert task["error"]["code"] == "deadline_exceeded"

    async def given_up() -> bool:  # the reaper ends the task, then empties its line
        return (await stack.client.get("/stats")).json()["queued"] == 1  # the running item

    await wait_for(given_up, timeout=10, what="the late batch's items to leave A's line")


@pytest.mark.slow
async def test_a_fleet_larger_than_one_arq_poll_fills_every_slot(make_stack: Any,
                                                                 pool: asyncpg.Pool) -> None:
    # each ARQ worker reads the first 100 job ids of the queue a poll (5 x max_jobs, 100 at
    # least): a fleet of more slots than that filled only 100 while running jobs stood at the
    # front. Six workers of 20: 120 slots.
    stack = await make_stack(workers=6, LONGTASK_WORKER_CONCURRENCY="20",
                             LONGTASK_TENANT_CONCURRENCY="0")
    big = await submit(stack.client, 150, 120.0)

    async def all_slots() -> bool:
        return await running(pool, "tenant-a") == 120

    await wait_for(all_slots, timeout=90, what="120 items to run at once")
    assert (await stack.client.post(f"/tasks/{big}/cancel")).status_code == 200
