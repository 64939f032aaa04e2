"""Redis behind Sentinel: REDIS_URL names the Sentinels and the service, and a web and two workers
ride out a failover mid-batch. The primary is killed (-9) while a batch runs and a live SSE
client follows it; the Sentinel promotes the replica; the batch completes, each file once, and
the client has every event once, in order. The old primary, back, gets nothing written to it;
one demoted while alive sends our writes on to the new primary. A REDIS_URL that is not one of
the forms stops the web and the worker at once, naming it."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from longtask.broker import connection
from longtask.broker.admission import Admission
from longtask.config import Settings
from longtask.core.errors import ConfigError, LimitReached
from longtask.store import api_keys
from longtask.testing.fake_openai import FakeOpenAI
from tests.conftest import Services
from tests.deploy.sentinel import SERVICE, SentinelRedis
from tests.deploy.test_guard import COMMANDS, UNREACHABLE, checkout_env
from tests.faults.test_worker_crash import assert_exactly_once, batch
from tests.support import (
    Web,
    Worker,
    cancel_open_tasks,
    fake_providers,
    sse_events,
    wait_for,
    wait_status,
)

FILES = 12


@dataclass
class Stack:
    web: Web
    workers: list[Worker]
    client: httpx.AsyncClient


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[SentinelRedis]:
    async with SentinelRedis(tmp_path / "redis") as servers:
        yield servers


@pytest.fixture
async def stack(services: Services, pool: asyncpg.Pool,
                deployment: SentinelRedis) -> AsyncIterator[Stack]:
    """A web and two workers on REDIS_URL=redis+sentinel://..., the LLM and embeddings from
    the test server."""
    with FakeOpenAI(latency=0.1) as fake:
        env = {**services.env, "REDIS_URL": deployment.url,
               "LONGTASK_QUEUE": "longtask:sentinel", **fake_providers(fake),
               # the workers' shared limit toward the LLM (Lua in Redis) on every call
               "LONGTASK_LLM_RATE": "100000/minute"}
        logs = services.root / "logs"
        web = Web("sentinel-web", env, logs).start()
        workers = [Worker(f"sentinel-worker{i}", env, logs).start() for i in range(2)]
        redis = connection.pool(deployment.url)
        client = httpx.AsyncClient(base_url=web.url, timeout=60)
        try:
            await web.ready()
            for worker in workers:
                await worker.ready(redis)
            key = await api_keys.create(pool, "tenant-a", "sentinel")
            client.headers["Authorization"] = f"Bearer {key}"
            yield Stack(web, workers, client)
            await cancel_open_tasks(pool, redis)  # while the workers that run them are up
        finally:
            await client.aclose()
            web.terminate()
            for worker in workers:
                worker.terminate()
            await redis.aclose()


@pytest.mark.timeout(300)
async def test_a_batch_rides_out_a_failover(stack: Stack, pool: asyncpg.Pool,
                                            deployment: SentinelRedis) -> None:
    await _failover_mid_batch(stack.client, pool, deployment)
    assert stack.web.alive and all(w.alive for w in stack.workers)  # they rode it out
    await _old_primary_back(stack.client, deployment)


async def _failover_mid_batch(client: httpx.AsyncClient, pool: asyncpg.Pool,
                              deployment: SentinelRedis) -> None:
    task_id = (await client.post("/documents", files=batch(8, FILES))).json()["id"]
    live = asyncio.create_task(sse_events(client, task_id, timeout=240))

    async def some_done() -> bool:
        return bool(await pool.fetchval("SELECT items_done >= 2 FROM tasks WHERE id = $1",
                                        task_id))

    redis = await connection.connect(deployment.url)
    limit = Admission(Settings(rate_limit="2/minute"), redis)  # a rate limit, as the web's
    try:
        await limit.request("probe")  # counted on the primary
        await wait_for(some_done, timeout=60, what="a few files to finish")
        deployment.primary.kill()
        await deployment.wait_promoted()
        assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", task_id) \
            == "running"
        await _limit_counts_on(limit)
        task = await wait_status(client, task_id, {"completed", "failed"}, timeout=240)
        assert task["status"] == "completed" and task["items_failed"] == 0
        seen = await live
    finally:
        live.cancel()
        await redis.aclose()
    seqs = [seq for seq, _, _ in seen]
    assert seqs == list(range(1, task["last_seq"] + 1))  # each once, in order, no gap
    assert seen == await sse_events(client, task_id)  # what a replay from Postgres says
    await assert_exactly_once(pool, task_id, FILES)


async def _limit_counts_on(limit: Admission) -> None:
    """The rate limit, on a client whose connections went to the old primary, counts on the new
    one: a Redis error would let every request through instead."""
    admitted = 0
    with pytest.raises(LimitReached):
        for _ in range(3):
            await limit.request("probe")
            admitted += 1
    # the hit before the failover counts, unless the replica had not got it yet when the old
    # primary died (asynchronous replication)
    assert admitted in (1, 2)


async def _old_primary_back(client: httpx.AsyncClient, deployment: SentinelRedis) -> None:
    """The old primary restarts empty and as a primary, until the Sentinel makes it a replica
    of the new one: nothing may be written to it meanwhile."""
    old = deployment.primary
    await old.start().ready()
    task_id = (await client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    events = await sse_events(client, task_id, timeout=60)
    assert (events[-1][1], events[-1][2]["status"]) == ("status", "completed")
    info = await old.client.info()  # its role and its keys, in one answer
    assert info["role"] == "slave" or not any(name.startswith("db") for name in info), info
    assert await deployment.primary_port() == deployment.replica.port


async def test_a_demoted_primary_is_left_for_the_new_one(deployment: SentinelRedis) -> None:
    """A switch while the old primary lives (`SENTINEL FAILOVER`, a network split): when it is
    made a replica and keeps our connection, a write there meets READONLY; the connection is
    dropped and the write done on the new primary, a Lua script's too (the rate limits' and the
    queue's are scripts)."""
    redis = await connection.connect(deployment.url)
    script = redis.register_script("return redis.call('set', KEYS[1], ARGV[1])")
    try:
        assert await redis.set("before", "1") and await script(["script"], ["before"])
        await deployment.sentinel.client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        await deployment.wait_promoted()
        # demoted as the Sentinel will do shortly, but without dropping its clients
        await deployment.primary.client.replicaof("127.0.0.1", deployment.replica.port)
        assert await redis.set("after", "1") and await script(["script"], ["after"])
        new = deployment.replica.client
        assert (await new.get("after"), await new.get("script")) == ("1", "after")
    finally:
        await redis.aclose()


@pytest.mark.parametrize("url, sentinels, service, database, password", [
    ("redis+sentinel://127.0.0.1/mymaster", [("127.0.0.1", 26379)], "mymaster", 0, None),
    ("redis+sentinel://:s3cret@a:26380,b:26381,c/cache/2",
     [("a", 26380), ("b", 26381), ("c", 26379)], "cache", 2, "s3cret"),
    ("redis+sentinel://[::1]:5000,sentinel-1.internal/mymaster/",
     [("::1", 5000), ("sentinel-1.internal", 26379)], "mymaster", 0, None),
])
def test_sentinel_urls(url: str, sentinels: list[tuple[str, int]], service: str,
                       database: int, password: str | None) -> None:
    settings = connection.redis_settings(url)
    assert isinstance(settings, connection.SentinelSettings) and settings.sentinel
    assert (settings.host, settings.sentinel_master, settings.database, settings.password,
            settings.ssl) == (sentinels, service, database, password, False)


def test_sentinel_url_options() -> None:
    tls = connection.redis_settings(
        "rediss+sentinel://app:p%40ss@s1,s2/mymaster?sentinel_password=other")
    assert isinstance(tls, connection.SentinelSettings)
    assert (tls.ssl, tls.ssl_cert_reqs, tls.username, tls.password, tls.sentinel_password) == \
        (True, "none", "app", "p@ss", "other")  # a self-signed certificate, as rediss://
    strict = connection.redis_settings("rediss+sentinel://s1/mymaster?ssl_cert_reqs=required")
    assert strict.ssl_cert_reqs == "required"


@pytest.mark.parametrize("url, says", [
    ("redis+sentinel://s1:26379", "name the monitored service"),
    ("redis+sentinel://s1/mymaster/zero", "database must be a number"),
    ("redis+sentinel://s1/mymaster/0/extra", "name the monitored service"),
    ("redis+sentinel:///mymaster", "list the Sentinels"),
    ("redis+sentinel://s1,,s2/mymaster", "list the Sentinels"),
    ("redis+sentinel://s1:port/mymaster", "'s1:port' has no valid port"),
    ("redis+sentinel://s1:99999/mymaster", "has no valid port"),
    ("redis+sentinel://[::1/mymaster", "IPv6"),
    ("redis+sentinel://s1/mymaster?master=x", "unknown option master"),
    ("redis+sentinel://s1/mymaster?ssl_cert_reqs=none", "TLS needs rediss+sentinel://"),
    ("sentinel://s1/mymaster", "not a Redis URL"),
    ("redis://localhost:sixty", "not a Redis URL"),
])
def test_a_bad_redis_url_names_redis_url(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL") as error:
        connection.redis_settings(url)
    assert says in str(error.value)


def test_a_bad_redis_url_shows_no_password() -> None:
    with pytest.raises(ConfigError) as error:
        connection.redis_settings("redis+sentinel://user:hunter2@s1/mymaster/x"
                                  "?sentinel_password=hunter3")
    assert "hunter" not in str(error.value) and "user:***@s1" in str(error.value)


@pytest.mark.parametrize("process", [p for p in COMMANDS if p != "release"])
def test_a_process_with_a_bad_redis_url_exits_naming_it(process: str, tmp_path: Path) -> None:
    env = checkout_env(DATABASE_URL=UNREACHABLE["DATABASE_URL"],
                       REDIS_URL=f"redis+sentinel://127.0.0.1:9/{SERVICE}/nine")
    done = subprocess.run(["bash", "-c", COMMANDS[process]], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert done.returncode != 0, done.stdout + done.stderr
    message = done.stderr.strip()
    assert "\n" not in message, message  # one line, no traceback
    assert "REDIS_URL" in message and "the database must be a number" in message
