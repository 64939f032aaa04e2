"""Session-wide real services: PostgreSQL (pgvector) and Redis on free ports, a web and a worker
process; every test starts from clean tables and a clean Redis database."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from longtask.db import create_pool
from longtask.db.migrate import migrate
from longtask.dev.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from longtask.store import api_keys
from tests.support import Web, Worker, cancel_open_tasks, service_env, wait_for

TABLES = ("task_events", "task_items", "tasks", "api_keys", "chunks", "document_pages",
          "documents", "file_parts", "files", "schedules", "webhook_deliveries",
          "tenant_storage")


def pytest_configure(config: pytest.Config) -> None:
    # A suite started as a background job of a script (`make test &`) has SIGINT ignored, and
    # so would every command it starts: give it Python's handler, so they start as from a shell
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class Services:
    postgres: EmbeddedPostgres
    redis: EmbeddedRedis
    root: Path

    @property
    def env(self) -> dict[str, str]:
        return service_env(self.postgres.url, self.redis.url)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    root = Path(tempfile.mkdtemp(prefix="longtask-tests-"))
    os.chmod(root, 0o755)  # the pgserver system user must reach the data directory
    os.environ["LONGTASK_PG_FAST"] = "1"  # fsync off: tests need no durability across power loss
    postgres = EmbeddedPostgres(root / "pg", free_port())
    redis = EmbeddedRedis(root / "redis", free_port())
    postgres.start()
    redis.start()
    (root / "logs").mkdir()
    try:
        yield Services(postgres, redis, root)
    finally:
        redis.kill()
        postgres.stop()
        if os.environ.get("CI") != "true":
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def migrated(services: Services) -> str:
    await migrate(services.postgres.url)
    return services.postgres.url


@pytest.fixture(scope="session")
async def _pool(migrated: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(migrated, min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def redis(services: Services) -> AsyncIterator[Redis]:
    client = Redis.from_url(services.redis.url)
    yield client
    await client.aclose()


@pytest.fixture
async def clean(_pool: asyncpg.Pool, redis: Redis) -> AsyncIterator[None]:
    """Clean tables and a clean Redis database for the test. After it, what it left pending or
    running is canceled, so that a test that fails does not hold up the next ones."""

    async def settled() -> bool:  # the last test's items finish (a canceled one cleans up)
        return not await _pool.fetchval(
            "SELECT count(*) FROM task_items WHERE status = 'running'")

    await wait_for(settled, timeout=15, what="running items of the previous test to end")
    for attempt in range(5):
        try:
            await _pool.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
            break
        except asyncpg.DeadlockDetectedError:  # a straggling write of the previous test
            if attempt == 4:
                raise
    await redis.flushdb()
    yield
    await cancel_open_tasks(_pool, redis)


@pytest.fixture
async def pool(_pool: asyncpg.Pool, clean: None) -> asyncpg.Pool:
    """The test database, cleaned for this test."""
    return _pool


@pytest.fixture(scope="session")
async def web(services: Services, migrated: str) -> AsyncIterator[Web]:
    proc = Web("web", services.env, services.root / "logs").start()
    try:
        yield await proc.ready()
    finally:
        proc.terminate()


@pytest.fixture(scope="session")
async def worker(services: Services, migrated: str, redis: Redis) -> AsyncIterator[Worker]:
    proc = Worker("worker", services.env, services.root / "logs").start()
    try:
        yield proc
    finally:
        proc.terminate()


@pytest.fixture
async def live_worker(worker: Worker, redis: Redis, clean: None) -> Worker:
    """The session worker, heartbeating (after the clean-up flushed Redis)."""
    return await worker.ready(redis)


@dataclass
class Tenant:
    name: str
    key: str
    client: httpx.AsyncClient


@pytest.fixture
async def tenant_a(web: Web, pool: asyncpg.Pool, clean: None) -> AsyncIterator[Tenant]:
    async with _tenant(web, pool, "tenant-a") as t:
        yield t


@pytest.fixture
async def tenant_b(web: Web, pool: asyncpg.Pool, clean: None) -> AsyncIterator[Tenant]:
    async with _tenant(web, pool, "tenant-b") as t:
        yield t


class _tenant:
    def __init__(self, web: Web, pool: asyncpg.Pool, name: str) -> None:
        self.web, self.pool, self.name = web, pool, name

    async def __aenter__(self) -> Tenant:
        key = await api_keys.create(self.pool, self.name, "tests")
        self.client = httpx.AsyncClient(base_url=self.web.url, timeout=30,
                                        headers={"Authorization": f"Bearer {key}"})
        return Tenant(self.name, key, self.client)

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()


@dataclass
class Stack:
    web: Web
    workers: list[Worker]
    client: httpx.AsyncClient
    key: str
    env: dict[str, str]


@pytest.fixture
async def make_stack(services: Services, migrated: str, pool: asyncpg.Pool, redis: Redis,
                     clean: None) -> AsyncIterator[Any]:
    """A private web (+ worker) on a queue of its own, with settings of its own."""
    started: list[Stack] = []

    async def make(workers: int = 1, **env: str) -> Stack:
        name = f"stack{len(started)}"
        full = {**services.env, "LONGTASK_QUEUE": f"longtask:{name}", **env}
        web = await Web(f"{name}-web", full, services.root / "logs").start().ready()
        procs = [Worker(f"{name}-worker{i}", full, services.root / "logs").start()
                 for i in range(workers)]
        for proc in procs:
            await proc.ready(redis)
        key = await api_keys.create(pool, "tenant-a", name)
        client = httpx.AsyncClient(base_url=web.url, timeout=60,
                                   headers={"Authorization": f"Bearer {key}"})
        started.append(Stack(web, procs, client, key, full))
        return started[-1]

    yield make
    await cancel_open_tasks(pool, redis)  # while the workers that run their items are up
    for stack in started:
        await stack.client.aclose()
        stack.web.terminate()
        for proc in stack.workers:
            proc.terminate()
