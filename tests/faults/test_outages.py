"""Redis restarted or flushed, PostgreSQL restarted, mid-batch: everything recovers by itself,
every task completes, and live SSE clients see every event with no gap."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx

from longtask.testing.fake_openai import FakeOpenAI
from tests.conftest import Services
from tests.faults.test_worker_crash import assert_exactly_once, batch
from tests.support import fake_providers, sse_events, wait_for, wait_status


async def _batch_through(stack: Any, pool: asyncpg.Pool, seed: int, outage: Any) -> None:
    task_id = (await stack.client.post("/documents", files=batch(seed))).json()["id"]
    watcher = asyncio.create_task(sse_events(stack.client, task_id, timeout=240))

    async def some_done() -> bool:
        return bool(await pool.fetchval("SELECT items_done > 1 FROM tasks WHERE id = $1",
                                        task_id))

    await wait_for(some_done, timeout=60, what="a few files to finish")
    await outage()
    task = await wait_status(stack.client, task_id, {"completed", "failed"}, timeout=240)
    assert task["status"] == "completed" and task["items_failed"] == 0
    seen = await watcher
    assert [s for s, _, _ in seen] == list(range(1, task["last_seq"] + 1))  # no gap, no dupe
    await assert_exactly_once(pool, task_id)


async def test_redis_restarted_mid_batch(make_stack: Any, pool: asyncpg.Pool,
                                         services: Services) -> None:
    with FakeOpenAI(latency=0.1) as fake:
        stack = await make_stack(workers=2, **fake_providers(fake))

        async def restart() -> None:
            services.redis.kill()  # its queue is gone with it: nothing is persisted
            services.redis.start()

        await _batch_through(stack, pool, 3, restart)
        assert all(w.alive for w in stack.workers)  # they rode it out


async def test_redis_flushed_mid_batch(make_stack: Any, pool: asyncpg.Pool,
                                       redis: Any) -> None:
    with FakeOpenAI(latency=0.1) as fake:
        stack = await make_stack(workers=2, **fake_providers(fake))
        await _batch_through(stack, pool, 4, redis.flushall)


async def test_postgres_restarted_mid_batch(make_stack: Any, pool: asyncpg.Pool,
                                            services: Services) -> None:
    with FakeOpenAI(latency=0.1) as fake:
        stack = await make_stack(workers=2, **fake_providers(fake))

        async def restart() -> None:
            services.postgres.kill()
            async with httpx.AsyncClient(base_url=stack.web.url, headers=stack.client.headers,
                                         timeout=10) as client:
                down = await client.get("/tasks")
            assert down.status_code == 503  # a clear answer, not a 500
            assert down.json()["error"] == "unavailable" and down.headers["retry-after"]
            services.postgres.start()

        await _batch_through(stack, pool, 5, restart)
