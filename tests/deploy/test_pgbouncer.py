"""Behind PgBouncer in transaction mode (issue 16): the web and the worker on a pooled
DATABASE_URL with LONGTASK_DB_STATEMENT_CACHE=0 do everything they do on Postgres itself, and
`migrate` runs through the pooler as it is."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections import deque
from datetime import datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis
from standardwebhooks import Webhook

from longtask.testing import pdfs
from longtask.testing.fake_openai import FakeOpenAI
from tests.api.test_stream import reconnect_gets_exactly_what_was_missed
from tests.conftest import Services
from tests.db.test_migrate import assert_two_migrations_at_once_apply_each_file_once
from tests.deploy.pgbouncer import PgBouncer
from tests.faults.test_worker_crash import kill_9_a_worker_five_times_during_a_batch
from tests.jobs.test_ingest import ingest, sample_files
from tests.jobs.test_schedules import EVERY_2S, tasks_of
from tests.jobs.test_webhooks import Receiver, ended, hooks
from tests.support import (
    ROOT,
    WEBHOOK_SECRET,
    fake_providers,
    new_database,
    task_status,
    wait_for,
    wait_status,
)


def pooled(bouncer: PgBouncer) -> dict[str, str]:
    """A stack's settings behind the pooler: what the README's Deploy section says to set."""
    return {"DATABASE_URL": bouncer.url(), "LONGTASK_DB_STATEMENT_CACHE": "0"}


async def pooled_stack(make_stack: Any, bouncer: PgBouncer, workers: int = 1, **env: str) -> Any:
    """`make_stack` behind the pooler; its web and workers are PgBouncer's clients (the tests'
    own connections go to Postgres directly)."""
    stack = await make_stack(workers=workers, **env, **pooled(bouncer))
    assert await bouncer.clients() >= 1 + len(stack.workers)
    return stack


async def test_a_batch_upload_completes_and_its_documents_are_found(
        make_stack: Any, pgbouncer: PgBouncer) -> None:
    with FakeOpenAI() as fake:
        stack = await pooled_stack(make_stack, pgbouncer, **fake_providers(fake))
        files = sample_files()
        submitted = await ingest(stack.client, files)
        task = await wait_status(stack.client, submitted["id"], {"completed", "failed"},
                                 timeout=120)
        assert task["status"] == "completed" and task["items_done"] == len(files)
        assert task["items_failed"] == 0
        for sample in pdfs.SAMPLES[:len(files)]:
            found = (await stack.client.get("/search", params={"q": sample.phrase})).json()
            assert found["results"][0]["filename"] == f"{sample.filename}.pdf"


async def test_a_client_back_with_last_event_id_gets_what_it_missed(
        make_stack: Any, pgbouncer: PgBouncer, redis: Redis) -> None:
    stack = await pooled_stack(make_stack, pgbouncer)
    _, first, rest = await reconnect_gets_exactly_what_was_missed(stack.client, redis)
    whole = first + rest  # what a replay of the whole gives (checked by the helper)
    assert whole[-1][1] == "status" and whole[-1][2]["status"] == "completed"
    assert len(rest) >= 4


async def test_cancel_stops_a_running_task_and_retry_runs_the_failed_item_again(
        make_stack: Any, pgbouncer: PgBouncer, redis: Redis) -> None:
    stack = await pooled_stack(make_stack, pgbouncer)
    client = stack.client
    forever = (await client.post("/tasks", json={"kind": "test.forever"})).json()["id"]
    await wait_status(client, forever, {"running"})
    canceled = await client.post(f"/tasks/{forever}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"

    async def item_stopped() -> bool:
        return (await task_status(client, forever))["items"][0]["status"] == "canceled"

    await wait_for(item_stopped, timeout=10, what="the running item to stop")
    assert await redis.get(f"stopped:{forever}") is not None  # the job itself ended

    batch = (await client.post("/tasks", json={"kind": "test.fanout", "params": {"items": [
        {"name": "good"}, {"name": "bad", "fail": True}]}})).json()["id"]
    done = await wait_status(client, batch, {"completed"})
    assert done["items_failed"] == 1
    retried = await client.post(f"/tasks/{batch}/retry")
    assert retried.status_code == 202, retried.text
    again = await wait_status(client, retried.json()["id"], {"completed", "failed"})
    assert again["retry_of"] == batch and [i["name"] for i in again["items"]] == ["bad"]
    assert again["items"][0]["error"]["code"] == "bad_item"  # it ran again, and failed again


async def test_webhooks_go_out_from_workers_behind_the_pooler(
        make_stack: Any, pgbouncer: PgBouncer, pool: asyncpg.Pool) -> None:
    async with Receiver(plan=deque([500, 500])) as receiver:
        stack = await pooled_stack(make_stack, pgbouncer, workers=2, **hooks(receiver))
        ids = [(await stack.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
               for _ in range(6)]
        for task_id in ids:  # each once, by one of the two workers, 500s retried
            row = await ended(pool, task_id, "delivered")
            taken = [h for h in receiver.of(task_id) if h.status == 204]
            assert len(taken) == 1 and taken[0].id == row["id"]
            Webhook(WEBHOOK_SECRET).verify(taken[0].body, taken[0].headers)
        assert sum(1 for h in receiver.hits if h.status == 500) == 2


async def test_a_schedule_fires(make_stack: Any, pgbouncer: PgBouncer) -> None:
    stack = await pooled_stack(make_stack, pgbouncer)
    answer = await stack.client.post("/schedules", json={
        "kind": "test.echo", "params": {"from": "schedule"}, "cron": EVERY_2S})
    assert answer.status_code == 201, answer.text
    schedule = answer.json()

    async def made() -> list[dict[str, Any]]:
        return await tasks_of(stack.client, schedule["id"])

    first = (await wait_for(made, timeout=10, what="a first firing"))[0]
    await stack.client.post(f"/schedules/{schedule['id']}/pause")
    done = await wait_status(stack.client, first["id"], {"completed"})
    assert done["result"]["echo"] == {"from": "schedule"}
    assert datetime.fromisoformat(done["started_at"]) >= datetime.fromisoformat(first["run_at"])
    # the stack's worker, the only one on its queue, fired it and ran it
    assert done["result"]["pid"] == stack.workers[0].pid


async def test_kill_9_a_worker_five_times_during_a_batch(make_stack: Any, pool: asyncpg.Pool,
                                                        pgbouncer: PgBouncer) -> None:
    await kill_9_a_worker_five_times_during_a_batch(
        functools.partial(pooled_stack, make_stack, pgbouncer), pool)


async def test_two_migrations_at_once_apply_each_file_once(services: Services,
                                                           pgbouncer: PgBouncer) -> None:
    """On one server connection for both (a fresh database has one here): a session's advisory
    lock would exclude nothing, as both runs' statements share the session that holds it."""
    async with new_database(services.postgres.url, "pooled") as name:
        await assert_two_migrations_at_once_apply_each_file_once(pgbouncer.url(name))


# One process's first query, through our pool; prints what it got
_CLIENT = """
import asyncio, sys
from longtask.db import create_pool

async def main(url, cache):
    pool = await create_pool(url, min_size=1, max_size=1, statement_cache=int(cache))
    try:
        print(await pool.fetchval("SELECT 'answered'"))
    except Exception as exc:
        print(type(exc).__name__, str(exc).splitlines()[0])
    finally:
        await pool.close()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_without_the_setting_two_processes_collide_on_a_server_connection(
        services: Services, pgbouncer: PgBouncer) -> None:
    """Why LONGTASK_DB_STATEMENT_CACHE=0. A web and a worker process each name their first
    prepared statement the same; the pooler may hand both the same server connection, where
    the first one's statement still is (a fresh database has one here, so it always does)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT)))}

    async def first_query(url: str, cache: int) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CLIENT, url, str(cache), env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode(errors="replace")
        return out.decode().strip()

    async with new_database(services.postgres.url, "pooled") as name:
        url = pgbouncer.url(name)
        assert [await first_query(url, 0) for _ in range(2)] == ["answered", "answered"]
        web, worker = [await first_query(url, 100) for _ in range(2)]
    assert web == "answered"
    assert worker.startswith("DuplicatePreparedStatementError prepared statement")
    assert "already exists" in worker
