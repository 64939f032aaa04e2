"""Deferred tasks: `run_at` / `delay` keep a task pending until then, across a worker restart and
a Redis flush (Postgres holds the time), and it can be canceled meanwhile."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import Tenant
from tests.support import Worker, task_status, wait_for


async def run_to_end_never_early(client: httpx.AsyncClient, task_id: str, not_before: datetime,
                                 timeout: float) -> dict[str, Any]:
    """Poll the task until it has ended, asserting at every look before `not_before` that it is
    still pending; return it."""
    async def ended() -> dict[str, Any] | None:
        task = await task_status(client, task_id)
        if datetime.now(timezone.utc) < not_before - timedelta(milliseconds=50):
            assert task["status"] == "pending" and task["started_at"] is None, task
        return task if task["status"] in ("completed", "failed", "canceled") else None

    task = await wait_for(ended, timeout, f"deferred task {task_id} to end", interval=0.05)
    assert task is not None and task["status"] == "completed", task
    assert datetime.fromisoformat(task["started_at"]) >= not_before
    return task


async def test_run_at_is_kept_across_a_restart_of_the_only_worker(make_stack: Any,
                                                                   redis: Redis) -> None:
    stack = await make_stack(workers=1)
    run_at = datetime.now(timezone.utc) + timedelta(seconds=3)
    answer = await stack.client.post("/tasks", json={"kind": "test.echo",
                                                     "run_at": run_at.isoformat()})
    assert answer.status_code == 202
    assert (answer.json()["status"], answer.json()["run_at"]) == ("pending", run_at.isoformat())
    only = stack.workers[0]
    await asyncio.to_thread(only.terminate)  # the worker that got the job goes away ...
    only.start()  # ... and a new process takes its place
    await only.ready(redis)
    task = await run_to_end_never_early(stack.client, answer.json()["id"], run_at, timeout=30)
    assert task["items"][0]["attempts"] == 1  # it ran once


async def test_delay_survives_a_redis_flush(tenant_a: Tenant, live_worker: Worker,
                                            redis: Redis) -> None:
    before = datetime.now(timezone.utc)
    answer = (await tenant_a.client.post("/tasks", json={"kind": "test.echo", "delay": 2})).json()
    run_at = datetime.fromisoformat(answer["run_at"])
    assert timedelta(seconds=2) <= run_at - before < timedelta(seconds=3)
    await redis.flushdb()  # the deferred ARQ job is gone; the reconciler enqueues it again
    await run_to_end_never_early(tenant_a.client, answer["id"], run_at, timeout=40)


async def test_cancel_while_deferred(tenant_a: Tenant, live_worker: Worker, pool: Any) -> None:
    answer = (await tenant_a.client.post("/tasks", json={"kind": "test.echo", "delay": 600})).json()
    canceled = await tenant_a.client.post(f"/tasks/{answer['id']}/cancel")
    assert canceled.json()["status"] == "canceled"
    task = await task_status(tenant_a.client, answer["id"])
    assert task["started_at"] is None and task["items"][0]["status"] == "canceled"


@pytest.mark.parametrize("extra, code", [
    ({"delay": -1}, "invalid_delay"),
    ({"delay": True}, "invalid_delay"),
    ({"delay": 31 * 86400}, "invalid_delay"),
    ({"delay": 5, "run_at": "2030-01-01T00:00:00Z"}, "invalid_run_at"),
    ({"run_at": "2030-01-01T00:00:00"}, "invalid_run_at"),  # no timezone
    ({"run_at": "tomorrow"}, "invalid_run_at"),
    ({"run_at": 1893456000}, "invalid_run_at"),
    ({"run_at": "2001-01-01T00:00:00Z"}, "invalid_run_at"),  # long past
    ({"run_at": "2999-01-01T00:00:00+02:00"}, "invalid_run_at"),  # too far ahead
])
async def test_bad_start_times_are_400(tenant_a: Tenant, extra: dict[str, Any],
                                       code: str) -> None:
    answer = await tenant_a.client.post("/tasks", json={"kind": "test.echo", **extra})
    assert (answer.status_code, answer.json()["error"]) == (400, code)
