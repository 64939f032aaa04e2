"""Stream tokens expire and are scoped to one task of one tenant; API keys never reach a log."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Tenant
from tests.support import wait_for


async def test_a_stream_token_expires(make_stack: Any) -> None:
    stack = await make_stack(workers=0, LONGTASK_STREAM_TOKEN_TTL="1")
    task_id = (await stack.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    issued = (await stack.client.post(f"/tasks/{task_id}/stream-token")).json()
    assert issued["expires_in"] == 1
    async with httpx.AsyncClient(base_url=stack.web.url, timeout=10) as browser:
        async with browser.stream("GET", issued["events_url"]) as fresh:
            assert fresh.status_code == 200  # the task is pending: the stream stays open

        async def refused() -> dict[str, Any] | None:  # an accepted stream is left at once
            async with browser.stream("GET", issued["events_url"]) as answer:
                if answer.status_code != 401:
                    return None
                await answer.aread()
                return dict(answer.json())

        expired = await wait_for(refused, timeout=10, what="the token to expire", interval=0.2)
    assert expired["error"] == "invalid_token"


async def test_a_token_is_for_its_tenants_task_only(tenant_a: Tenant, tenant_b: Tenant,
                                                    web: Any) -> None:
    mine = (await tenant_a.client.post("/tasks", json={"kind": "test.echo",
                                                       "params": {"gate": "never"}})).json()["id"]
    theirs = (await tenant_b.client.post("/tasks", json={"kind": "test.echo",
                                                         "params": {"gate": "never"}})).json()["id"]
    # B cannot get a token for A's task, and A's token does not open B's
    assert (await tenant_b.client.post(f"/tasks/{mine}/stream-token")).status_code == 404
    token = (await tenant_a.client.post(f"/tasks/{mine}/stream-token")).json()["token"]
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as browser:
        other = await browser.get(f"/tasks/{theirs}/events", params={"token": token})
    assert (other.status_code, other.json()["error"]) == (401, "invalid_token")
    for client, task in ((tenant_a.client, mine), (tenant_b.client, theirs)):
        await client.post(f"/tasks/{task}/cancel")


async def test_keys_never_reach_the_log(make_stack: Any) -> None:
    stack = await make_stack(workers=0, LOG_LEVEL="DEBUG")
    task_id = (await stack.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    await stack.client.get(f"/tasks/{task_id}")
    await stack.client.get("/tasks", headers={"Authorization": "Bearer lt_not_a_real_key"})
    token = (await stack.client.post(f"/tasks/{task_id}/stream-token")).json()["token"]
    log = stack.web.tail(10_000)
    assert f"/tasks/{task_id}" in log  # requests are logged ...
    assert stack.key not in log and "lt_not_a_real_key" not in log  # ... keys are not
    assert token not in log  # nor the token handed out in the body
