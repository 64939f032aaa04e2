"""The job framework with a kind defined in the tests: fan-out, per-item errors, retries."""

from __future__ import annotations

import asyncpg
import pytest
from redis.asyncio import Redis

from tests.conftest import Tenant
from tests.support import (
    Worker,
    assert_event_times,
    sse_events,
    sse_timed_events,
    utc_now,
    wait_status,
)


async def test_fan_out_runs_each_item_as_its_own_job_and_a_bad_item_fails_alone(
        tenant_a: Tenant, live_worker: Worker, pool: asyncpg.Pool) -> None:
    items = [{"name": "a"}, {"name": "bad", "fail": True}, {"name": "c"}, {"name": "d"}]
    task_id = (await tenant_a.client.post(
        "/tasks", json={"kind": "test.fanout", "params": {"items": items}})).json()["id"]
    task = await wait_status(tenant_a.client, task_id, {"completed", "failed"})
    assert task["status"] == "completed"  # a batch with a bad item still completes
    assert (task["items_total"], task["items_done"], task["items_failed"]) == (4, 4, 1)
    outcomes = {o["name"]: o for o in task["result"]["items"]}
    assert outcomes["bad"]["error"] == {"code": "bad_item", "message": "bad is bad"}
    assert {n: o["status"] for n, o in outcomes.items()} == \
        {"a": "completed", "bad": "failed", "c": "completed", "d": "completed"}
    jobs = await pool.fetch("SELECT job_id FROM task_items WHERE task_id = $1", task_id)
    assert len({r["job_id"] for r in jobs}) == 4  # one ARQ job per item


async def test_transient_errors_are_retried_with_fresh_job_ids(tenant_a: Tenant,
                                                               live_worker: Worker) -> None:
    items = [{"name": "flaky", "flaky": 2}]
    task_id = (await tenant_a.client.post(
        "/tasks", json={"kind": "test.fanout", "params": {"items": items}})).json()["id"]
    task = await wait_status(tenant_a.client, task_id, {"completed", "failed"})
    assert task["status"] == "completed"
    assert task["items"][0]["attempts"] == task["attempts"] == 3
    assert task["items"][0]["result"]["attempt"] == 3
    events = await sse_events(tenant_a.client, task_id)
    retries = [d for _, e, d in events if e == "item" and d["status"] == "retrying"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert retries[0]["error"]["code"] == "upstream_unavailable"


async def test_transient_errors_give_up_after_max_retries(tenant_a: Tenant,
                                                         live_worker: Worker) -> None:
    items = [{"name": "down", "flaky": 99}]
    task_id = (await tenant_a.client.post(
        "/tasks", json={"kind": "test.fanout", "params": {"items": items}})).json()["id"]
    task = await wait_status(tenant_a.client, task_id, {"completed", "failed"})
    assert task["status"] == "failed"  # a task of one item ends as its item did
    assert task["items"][0]["attempts"] == 4  # the first run and 3 retries
    assert task["error"]["code"] == "upstream_unavailable"
    assert "gave up after 4 attempts" in task["error"]["message"]


async def test_a_retry_resumes_after_the_last_checkpoint(tenant_a: Tenant, live_worker: Worker,
                                                         redis: Redis) -> None:
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.resume"})).json()["id"]
    task = await wait_status(tenant_a.client, task_id, {"completed", "failed"})
    assert task["status"] == "completed"
    assert task["result"] == {"resumed_from": 2}
    assert task["attempts"] == 2
    # steps 1 and 2 ran once; 3 failed and ran again; nothing finished was redone
    assert [int(s) for s in await redis.lrange(f"steps:{task_id}", 0, -1)] == [1, 2, 3, 3, 4]


async def test_progress_of_many_items_at_once_keeps_every_tasks_stream_whole(
        tenant_a: Tenant, live_worker: Worker) -> None:
    # items run 8 at a time on the session worker and report back to back, so their reports
    # are written to Postgres together: each must still be its own event, in order, once
    items, steps = 24, 12
    start = utc_now()
    task_id = (await tenant_a.client.post("/tasks", json={
        "kind": "test.reporter", "params": {"items": items, "steps": steps}})).json()["id"]
    timed = await sse_timed_events(tenant_a.client, task_id, timeout=60)
    # written in batches that wait for each other's task locks, the times still follow seq
    assert_event_times([e[0] for e in timed], [e[3] for e in timed], start, utc_now())
    events = [(seq, event, data) for seq, event, data, _ in timed]
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))  # no gap, no repeat
    assert events[-1][1:] == ("status", {"status": "completed", "result": events[-1][2]["result"]})
    progress = [data for _, event, data in events if event == "progress"]
    assert len(progress) == items * steps
    for item in range(items):
        mine = [(d["step"], d["percent"], d["message"]) for d in progress if d["item"] == item]
        assert mine == [(s, round(100 * s / steps, 2), f"step {s}") for s in range(1, steps + 1)]
    overall = [d["task_percent"] for d in progress]
    assert overall == sorted(overall)  # the task's percent never goes back
    assert overall[-1] == 100
    task = await wait_status(tenant_a.client, task_id, {"completed"})
    assert task["progress"] == 100


@pytest.mark.parametrize("via", ["emit", "progress"])
async def test_a_key_at_of_a_jobs_own_is_refused(tenant_a: Tenant, live_worker: Worker,
                                                 via: str) -> None:
    """`at` in an event's data is its time on SSE: a job's own would overwrite it, or be
    overwritten, silently. The job gets a TypeError (here uncaught: the item fails)."""
    task_id = (await tenant_a.client.post("/tasks", json={
        "kind": "test.own_at", "params": {"via": via}})).json()["id"]
    task = await wait_status(tenant_a.client, task_id, {"completed", "failed"})
    assert task["status"] == "failed"
    assert task["error"]["code"] == "internal_error"
    assert task["error"]["message"].startswith("TypeError: event data may not have a key 'at'")
    events = await sse_events(tenant_a.client, task_id)
    assert [e for _, e, _ in events] == ["status", "status", "item", "item", "status"]
