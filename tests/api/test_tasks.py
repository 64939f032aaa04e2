"""POST/GET/DELETE /tasks, cancel, idempotency, pagination and errors, through a real uvicorn
and a real worker process."""

from __future__ import annotations

import os
import uuid

import httpx
from redis.asyncio import Redis

from longtask.broker import admission
from longtask.config import Settings
from tests.conftest import Tenant
from tests.support import Web, Worker, sse_events, task_status, wait_for, wait_status


async def test_submit_answers_202_at_once_and_a_separate_worker_runs_it(
        tenant_a: Tenant, live_worker: Worker, web: Web, redis: Redis) -> None:
    gate = f"gate:{uuid.uuid4()}"
    response = await tenant_a.client.post(
        "/tasks", json={"kind": "test.echo", "params": {"gate": gate, "n": 1}})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"  # the job cannot have finished: its gate is still shut
    assert body["links"]["events"] == f"/tasks/{body['id']}/events"
    assert response.headers["location"] == f"/tasks/{body['id']}"

    await redis.set(gate, 1)
    task = await wait_status(tenant_a.client, body["id"], {"completed", "failed"})
    assert task["status"] == "completed"
    assert task["result"]["echo"] == {"gate": gate, "n": 1}
    assert task["result"]["pid"] == live_worker.pid
    assert task["result"]["pid"] not in (os.getpid(), web.pid)
    assert task["progress"] == 100
    assert task["started_at"] and task["finished_at"]
    assert [i["status"] for i in task["items"]] == ["completed"]


async def test_cancel_pending_task_never_runs(tenant_a: Tenant, worker: Worker,
                                              redis: Redis) -> None:
    worker.terminate()  # no worker: the task stays pending with its job in the queue
    try:
        response = await tenant_a.client.post("/tasks", json={"kind": "test.echo", "params": {}})
        task_id = response.json()["id"]
        canceled = await tenant_a.client.post(f"/tasks/{task_id}/cancel")
        assert canceled.status_code == 200
        assert canceled.json()["status"] == "canceled"
    finally:
        worker.start()
    await worker.ready(redis)
    # the worker takes the queued job and must skip it

    async def queue_drained() -> bool:
        return (await admission.depth(redis, Settings().queue_name)) == 0  # type: ignore[arg-type]

    await wait_for(queue_drained, what="the queued job to be taken")
    task = await task_status(tenant_a.client, task_id)
    assert task["status"] == "canceled"
    assert task["started_at"] is None
    assert task["items"][0]["status"] == "canceled"
    assert task["items"][0]["attempts"] == 0
    events = await sse_events(tenant_a.client, task_id)
    assert [e[2].get("status") for e in events] == ["pending", "canceled"]


async def test_cancel_running_task_stops_it_within_5s(tenant_a: Tenant, live_worker: Worker,
                                                      redis: Redis) -> None:
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.forever"})).json()["id"]
    await wait_status(tenant_a.client, task_id, {"running"})
    await wait_for(lambda: _ticked(tenant_a.client, task_id), what="a first tick")

    response = await tenant_a.client.post(f"/tasks/{task_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "canceled"

    async def item_stopped() -> bool:
        task = await task_status(tenant_a.client, task_id)
        return task["items"][0]["status"] == "canceled"

    await wait_for(item_stopped, timeout=5, what="the running item to stop")
    assert await redis.get(f"stopped:{task_id}") is not None  # the function itself ended
    events = await sse_events(tenant_a.client, task_id)
    assert events[-1][2] == {"status": "canceled"}  # nothing after the terminal event

    again = await tenant_a.client.post(f"/tasks/{task_id}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "canceled"  # idempotent


async def test_cancel_of_finished_task_is_409(tenant_a: Tenant, live_worker: Worker) -> None:
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    await wait_status(tenant_a.client, task_id, {"completed"})
    response = await tenant_a.client.post(f"/tasks/{task_id}/cancel")
    assert response.status_code == 409
    assert response.json()["error"] == "task_finished"


async def test_delete(tenant_a: Tenant, live_worker: Worker) -> None:
    running = (await tenant_a.client.post("/tasks", json={"kind": "test.forever"})).json()["id"]
    await wait_status(tenant_a.client, running, {"running"})
    refused = await tenant_a.client.delete(f"/tasks/{running}")
    assert refused.status_code == 409 and refused.json()["error"] == "task_active"
    await tenant_a.client.post(f"/tasks/{running}/cancel")
    assert (await tenant_a.client.delete(f"/tasks/{running}")).status_code == 204
    gone = await tenant_a.client.get(f"/tasks/{running}")
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"


async def test_idempotency_key(tenant_a: Tenant, live_worker: Worker) -> None:
    headers = {"Idempotency-Key": "order-42"}
    body = {"kind": "test.echo", "params": {"order": 42}}
    first = await tenant_a.client.post("/tasks", json=body, headers=headers)
    second = await tenant_a.client.post("/tasks", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    other = await tenant_a.client.post("/tasks", json={"kind": "test.echo", "params": {"o": 1}},
                                       headers=headers)
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    listed = (await tenant_a.client.get("/tasks")).json()["tasks"]
    assert [t["id"] for t in listed] == [first.json()["id"]]


async def test_list_filters_and_pages_without_gaps(tenant_a: Tenant, live_worker: Worker) -> None:
    made = [(await tenant_a.client.post("/tasks", json={"kind": "test.echo", "params": {"i": i}}))
            .json()["id"] for i in range(5)]
    for task_id in made:
        await wait_status(tenant_a.client, task_id, {"completed"})
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", "status": "completed", "kind": "test.echo"}
        if cursor:
            params["cursor"] = cursor
        page = (await tenant_a.client.get("/tasks", params=params)).json()
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))  # newest first, each once
    none = (await tenant_a.client.get("/tasks", params={"status": "failed"})).json()
    assert none == {"tasks": [], "next_cursor": None}


async def test_errors_are_json_with_the_right_status(tenant_a: Tenant, web: Web) -> None:
    client = tenant_a.client
    cases = [
        (await client.get(f"/tasks/{uuid.uuid4()}"), 404, "not_found"),
        (await client.get("/tasks/not-a-uuid"), 404, "not_found"),
        (await client.post("/tasks", content=b"{not json",
                           headers={"Content-Type": "application/json"}), 400, "invalid_json"),
        (await client.post("/tasks", json=["a", "list"]), 400, "invalid_input"),
        (await client.post("/tasks", json={"kind": "no.such.kind"}), 422, "unknown_kind"),
        (await client.post("/tasks", json={"kind": "test.fanout", "params": {}}), 422,
         "invalid_params"),
        (await client.get("/tasks", params={"limit": "-1"}), 400, "invalid_query"),
        (await client.get("/tasks", params={"cursor": "!!"}), 400, "invalid_cursor"),
        (await client.get("/tasks", params={"status": "sleeping"}), 400, "invalid_query"),
    ]
    async with httpx.AsyncClient(base_url=web.url) as anonymous:
        cases += [
            (await anonymous.get("/tasks"), 401, "missing_key"),
            (await anonymous.get("/tasks", headers={"Authorization": "Bearer lt_wrong"}), 401,
             "invalid_key"),
            (await anonymous.post("/tasks", json={"kind": "test.echo"}), 401, "missing_key"),
            (await anonymous.get("/stats"), 401, "missing_key"),
        ]
        health = await anonymous.get("/health")
    for response, status, code in cases:
        assert (response.status_code, response.json()["error"]) == (status, code), response.text
        assert response.json()["detail"]
    assert health.status_code == 200  # the one endpoint without a key


async def test_tenant_a_cannot_reach_tenant_b_task(tenant_a: Tenant, tenant_b: Tenant,
                                                   live_worker: Worker) -> None:
    theirs = (await tenant_b.client.post("/tasks", json={"kind": "test.forever"})).json()["id"]
    await wait_status(tenant_b.client, theirs, {"running"})
    client = tenant_a.client
    answers = [
        await client.get(f"/tasks/{theirs}"),
        await client.get(f"/tasks/{theirs}/events"),
        await client.post(f"/tasks/{theirs}/cancel"),
        await client.delete(f"/tasks/{theirs}"),
        await client.post(f"/tasks/{theirs}/stream-token"),
    ]
    assert [(r.status_code, r.json()["error"]) for r in answers] == [(404, "not_found")] * 5
    assert (await client.get("/tasks")).json()["tasks"] == []
    assert (await client.get("/stats")).json()["tasks"]["by_status"] == {}
    assert (await task_status(tenant_b.client, theirs))["status"] == "running"  # untouched
    await tenant_b.client.post(f"/tasks/{theirs}/cancel")


async def test_stats_and_ready(tenant_a: Tenant, live_worker: Worker, web: Web) -> None:
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    await wait_status(tenant_a.client, task_id, {"completed"})
    stats = (await tenant_a.client.get("/stats")).json()
    assert stats["tasks"]["by_status"] == {"completed": 1}
    assert stats["tasks"]["by_kind"] == {"test.echo": {"completed": 1}}
    assert stats["workers_alive"] >= 1 and stats["queue_depth"] == 0
    async with httpx.AsyncClient(base_url=web.url) as anonymous:
        ready = await anonymous.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["postgres"] == "ok" and ready.json()["checks"]["workers"] >= 1


async def _ticked(client: httpx.AsyncClient, task_id: str) -> bool:
    return (await task_status(client, task_id))["progress"] > 0
