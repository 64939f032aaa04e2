"""Dead letters and their retry, the failure webhook, task deadlines and soft item timeouts."""

from __future__ import annotations

from typing import Any

from longtask.testing.fake_openai import FakeOpenAI
from tests.conftest import Tenant
from tests.support import WEBHOOK_SECRET, Worker, task_status, wait_for, wait_status

BATCH = {"kind": "test.fanout", "params": {"items": [
    {"name": "good"}, {"name": "bad", "fail": True}, {"name": "fine"}]}}


async def test_failed_items_show_as_dead_letters_and_retry_alone(tenant_a: Tenant,
                                                                 live_worker: Worker) -> None:
    client = tenant_a.client
    ok = (await client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    task_id = (await client.post("/tasks", json=BATCH)).json()["id"]
    await wait_status(client, task_id, {"completed"})
    await wait_status(client, ok, {"completed"})
    dead = (await client.get("/tasks", params={"status": "failed"})).json()["tasks"]
    assert [t["id"] for t in dead] == [task_id]  # completed, but with a failed item
    assert dead[0]["items_failed"] == 1

    retried = await client.post(f"/tasks/{task_id}/retry")
    assert retried.status_code == 202
    again = await wait_status(client, retried.json()["id"], {"completed", "failed"})
    assert again["retry_of"] == task_id
    assert [i["name"] for i in again["items"]] == ["bad"]  # only the failed item ran again
    assert (await task_status(client, task_id))["status"] == "completed"  # the old one stands

    none_failed = await client.post(f"/tasks/{ok}/retry")
    assert (none_failed.status_code, none_failed.json()["error"]) == (409, "nothing_to_retry")


async def test_a_webhook_hears_of_failures(make_stack: Any) -> None:
    with FakeOpenAI() as hooks:
        stack = await make_stack(LONGTASK_WEBHOOK_URL=f"http://127.0.0.1:{hooks.port}/hooks/t",
                                 LONGTASK_WEBHOOK_SECRET=WEBHOOK_SECRET)
        hooks.fail_next("500")  # the first delivery fails; it is retried
        task_id = (await stack.client.post("/tasks", json=BATCH)).json()["id"]
        await wait_status(stack.client, task_id, {"completed"})

        async def delivered() -> Any:
            return [r for r in hooks.requests if r.status == 204]

        [hook] = await wait_for(delivered, timeout=15, what="the webhook")
        assert hook.body["type"] == "task.completed"  # a batch with a bad file still completes
        task = hook.body["data"]["task"]
        assert task["id"] == task_id and task["items_failed"] == 1
        assert hooks.calls("/hooks/t") == 2


async def test_a_task_past_its_deadline_fails_and_stops(tenant_a: Tenant, live_worker: Worker,
                                                        redis: Any) -> None:
    task_id = (await tenant_a.client.post(
        "/tasks", json={"kind": "test.forever", "deadline_seconds": 1})).json()["id"]
    task = await wait_status(tenant_a.client, task_id, {"completed", "failed", "canceled"},
                             timeout=10)
    assert task["status"] == "failed" and task["error"]["code"] == "deadline_exceeded"

    async def stopped() -> bool:
        item = (await task_status(tenant_a.client, task_id))["items"][0]
        return item["status"] == "canceled"

    await wait_for(stopped, timeout=5, what="the running item to stop")
    assert await redis.get(f"stopped:{task_id}") is not None
    bad = await tenant_a.client.post("/tasks", json={"kind": "test.echo",
                                                     "deadline_seconds": -1})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_deadline")


async def test_a_soft_timeout_fails_the_item_as_timeout(tenant_a: Tenant,
                                                        live_worker: Worker) -> None:
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.sleepy"})).json()["id"]
    task = await wait_status(tenant_a.client, task_id, {"completed", "failed"}, timeout=10)
    assert task["status"] == "failed"
    assert task["error"] == {"code": "timeout", "message": "took longer than 0.5s"}


async def test_the_hard_limit_fails_an_item_that_ignores_the_soft_one(make_stack: Any) -> None:
    stack = await make_stack(LONGTASK_JOB_TIMEOUT="5", LONGTASK_ITEM_TIMEOUT="1")
    task_id = (await stack.client.post("/tasks", json={"kind": "test.stubborn"})).json()["id"]
    task = await wait_status(stack.client, task_id, {"completed", "failed"}, timeout=30)
    assert task["status"] == "failed" and task["error"]["code"] == "timeout"
    assert "hard limit of 5s" in task["error"]["message"]
    assert task["items"][0]["attempts"] == 1  # failed, not handed back to run forever
