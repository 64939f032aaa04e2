"""After a worker is killed with kill -9 and its item is taken over and completed, the queue
depth says 0 everywhere a user reads it (`/stats`, `/metrics`, ARQ's health line), within a
reaper cycle, not after ARQ's job_timeout + 10 s: queue depth drives admission (503 when full),
so a phantom count refuses real work."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest
from arq.constants import health_check_key_suffix, in_progress_key_prefix
from redis.asyncio import Redis

from longtask.service.duties import RECONCILE_EVERY_SECONDS
from tests.support import wait_for, wait_status
from tests.test_metrics import scrape, value

REAPER_SECONDS = 1


@pytest.mark.parametrize("fair", ["1", "0"], ids=["fair-dispatch", "one-arq-queue"])
async def test_queue_depth_is_0_once_a_killed_workers_item_is_completed_by_another(
        make_stack: Any, pool: asyncpg.Pool, redis: Redis, fair: str) -> None:
    stack = await make_stack(workers=2, LONGTASK_FAIR_DISPATCH=fair,
                             LONGTASK_LEASE_SECONDS="2", LONGTASK_HEARTBEAT_SECONDS="0.5",
                             LONGTASK_REAPER_SECONDS=str(REAPER_SECONDS),
                             LONGTASK_METRICS_REFRESH_SECONDS=str(REAPER_SECONDS))
    gate = "gate:crash"
    task_id = (await stack.client.post(
        "/tasks", json={"kind": "test.echo", "params": {"gate": gate}})).json()["id"]

    async def running_on() -> Any:  # the worker whose lease the item holds
        owner = await pool.fetchval(
            "SELECT lease_owner FROM task_items WHERE task_id = $1 AND status = 'running'",
            task_id)
        return next((w for w in stack.workers if owner and f":{w.pid}:" in owner), None)

    victim = await wait_for(running_on, timeout=30, what="a worker to run the item")
    victim.kill()  # mid-item: it waits on the gate
    await redis.set(gate, 1)
    task = await wait_status(stack.client, task_id, {"completed", "failed"}, timeout=60)
    assert task["status"] == "completed"
    assert await pool.fetchval(  # taken over after its lease expired
        "SELECT count(*) FROM task_events WHERE task_id = $1 AND type = 'item'"
        " AND data->'error'->>'code' = 'lease_expired'", task_id) == 1
    ended_at = time.monotonic()

    async def stats_depth() -> bool:
        stats = (await stack.client.get("/stats")).json()
        return stats["queue_depth"] == 0 and stats["queued"] == 0

    async def metrics_depth() -> bool:
        return value(await scrape(f"{stack.web.url}/metrics"), "longtask_queue_depth") == 0

    # one reaper cycle (and one refresh of the figures /metrics caches, as long), plus slack
    await wait_for(stats_depth, timeout=REAPER_SECONDS + 2, what="/stats queue_depth 0")
    await wait_for(metrics_depth, timeout=2 * REAPER_SECONDS + 2,
                   what="/metrics longtask_queue_depth 0")
    print(f"queue depth 0 {time.monotonic() - ended_at:.2f}s after the task completed")

    # ARQ's own health line (`queued=`), written every health_check_interval (10 s): one
    # written after the task completed
    health = stack.env["LONGTASK_QUEUE"] + health_check_key_suffix
    before = await redis.get(health)

    async def health_line() -> bytes | None:
        line = await redis.get(health)
        return line if line and line != before else None

    line = await wait_for(health_line, timeout=25, what="ARQ to write its health line again",
                          interval=0.2)
    assert line.endswith(b" queued=0"), line


async def test_with_one_arq_queue_a_job_whose_item_ended_is_not_counted(
        make_stack: Any, pool: asyncpg.Pool, redis: Redis) -> None:
    """A worker killed after its item ended but before ARQ ended the job leaves it on the ARQ
    queue, marked in progress, until job_timeout + 10 s. Fair dispatch's sweep finds it in its
    `run` hash; with one ARQ queue the reconciler finds it on the queue: where ARQ left it, or
    where a claimed job is moved back to (ARQ's own retry time)."""
    stack = await make_stack(workers=1, LONGTASK_FAIR_DISPATCH="0")
    task_id = (await stack.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    await wait_status(stack.client, task_id, {"completed"})
    job_id = await pool.fetchval("SELECT job_id FROM task_items WHERE task_id = $1", task_id)
    queue = stack.env["LONGTASK_QUEUE"]
    # what the killed worker leaves: the job on the queue, taken (ARQ's own keys, as ARQ sets
    # them), where ARQ left it or moved back to when ARQ would run it again (a claimed one)
    for score in (time.time() * 1000, (time.time() + 3600) * 1000):
        await redis.zadd(queue, {job_id: score})
        await redis.set(in_progress_key_prefix + job_id, b"1", px=3_600_000)

        async def depth_0() -> bool:
            return (await stack.client.get("/stats")).json()["queue_depth"] == 0

        await wait_for(depth_0, timeout=2 * RECONCILE_EVERY_SECONDS + 3,
                       what="the reconciler to take the ended job off the queue")
