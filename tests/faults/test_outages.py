"""Redis restarted or flushed, PostgreSQL restarted, mid-batch: everything recovers by itself,
every task completes, and live SSE clients see every event with no gap."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from redis.exceptions import WatchError

from longtask.broker import connection
from longtask.testing.fake_openai import FakeOpenAI
from tests.conftest import Services
from tests.faults.test_worker_crash import assert_exactly_once, batch
from tests.support import (
    CuttableProxy,
    assert_no_slot_held,
    fake_providers,
    sse_events,
    wait_for,
    wait_status,
)


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
    redis = await connection.connect(stack.env["REDIS_URL"])
    try:  # what the outage left of the counts does not stay held
        await assert_no_slot_held(redis, stack.env["LONGTASK_QUEUE"], "tenant-a")
    finally:
        await redis.aclose()


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


async def test_a_redis_connection_reset_during_its_handshake_is_retried(
        services: Services) -> None:
    # a restarting Redis can accept a connection and reset it before answering: redis-py
    # retries commands and TCP connects, not that, and ARQ's poll loop died of it once in CI
    async with CuttableProxy(services.redis.port) as proxy:
        url = proxy.url.replace("http://", "redis://") + "/1"  # db 1: the handshake sends SELECT
        redis = await connection.connect(url)
        try:
            assert await redis.ping()
            proxy.refusing = True
            proxy.cut()  # the pooled connection is gone: the next command makes a new one
            refused_from = proxy.connections

            async def accept_after_two() -> None:
                await wait_for(lambda: _at_least(proxy, refused_from + 2), timeout=10,
                               what="two connections to be reset", interval=0.005)
                proxy.refusing = False

            reopen = asyncio.create_task(accept_after_two())
            assert await redis.ping()
            await reopen
            assert proxy.connections >= refused_from + 3  # two reset, then one that worked
        finally:
            await redis.aclose()


async def _at_least(proxy: CuttableProxy, connections: int) -> bool:
    return proxy.connections >= connections


async def test_a_connection_dropped_between_watch_and_multi_fails_at_exec(
        services: Services) -> None:
    # ARQ's start_jobs reads between WATCH and MULTI outside its `except WatchError`: redis-py's
    # WatchError from that read (the connection dropped) once ended a worker after a restart
    redis = await connection.connect(services.redis.url)
    try:
        await redis.set("watched", "1")
        async with redis.pipeline(transaction=True) as pipe:
            await pipe.watch("watched")
            await redis.client_kill_filter(_id=await pipe.client_id())
            assert await pipe.exists("watched") == 1  # answered, on a new connection
            assert await pipe.get("watched") == b"1"
            pipe.multi()
            pipe.set("watched", "2")
            with pytest.raises(WatchError):  # the watch was lost with it: the write is off
                await pipe.execute()
        assert await redis.get("watched") == b"1"
        async with redis.pipeline(transaction=True) as pipe:  # the next transaction is whole
            await pipe.watch("watched")
            pipe.multi()
            pipe.set("watched", "3")
            await pipe.execute()
        assert await redis.get("watched") == b"3"
    finally:
        await redis.aclose()
