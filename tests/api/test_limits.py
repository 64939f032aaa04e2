"""Backpressure and browsers: a tenant over its request rate, open-task limit or queue depth gets
429, a full queue 503, each with Retry-After and the JSON error body; CORS answers only the
allowed origins."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from longtask.store import api_keys
from longtask.testing import pdfs

ALLOWED = "https://app.example"


async def test_a_tenant_over_its_request_rate_gets_429(make_stack: Any,
                                                       pool: asyncpg.Pool) -> None:
    stack = await make_stack(workers=0, LONGTASK_RATE_LIMIT="5/minute")
    answers = [await stack.client.get("/tasks") for _ in range(8)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
    refused = answers[-1]
    assert refused.json()["error"] == "rate_limited" and "5 per 1 minute" in refused.json()["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    other = await api_keys.create(pool, "tenant-b", "other")  # the limit is per tenant
    async with httpx.AsyncClient(base_url=stack.web.url) as client:
        mine = await client.get("/tasks", headers={"Authorization": f"Bearer {other}"})
    assert mine.status_code == 200


async def test_a_tenant_at_its_open_task_limit_gets_429_until_one_ends(make_stack: Any,
                                                                       pool: asyncpg.Pool) -> None:
    stack = await make_stack(workers=0, LONGTASK_MAX_OPEN_TASKS="2")
    first, second, third = [await stack.client.post("/tasks", json={"kind": "test.echo"})
                            for _ in range(3)]
    assert (first.status_code, second.status_code, third.status_code) == (202, 202, 429)
    assert third.json()["error"] == "too_many_open_tasks" and third.headers["retry-after"] == "5"
    files = [("files", ("a.pdf", pdfs.many_pages_pdf(2), "application/pdf"))]
    upload = await stack.client.post("/documents", files=files)
    assert upload.status_code == 429  # refused before a byte of it was stored
    assert await pool.fetchval("SELECT count(*) FROM files") == 0
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 2
    await stack.client.post(f"/tasks/{first.json()['id']}/cancel")
    assert (await stack.client.post("/tasks", json={"kind": "test.echo"})).status_code == 202


async def test_a_full_queue_answers_503_with_retry_after(make_stack: Any) -> None:
    stack = await make_stack(workers=0, LONGTASK_MAX_QUEUE_DEPTH="3")
    batch = {"kind": "test.fanout", "params": {"items": [{"name": str(i)} for i in range(3)]}}
    assert (await stack.client.post("/tasks", json=batch)).status_code == 202
    full = await stack.client.post("/tasks", json={"kind": "test.echo"})
    assert full.status_code == 503
    assert full.json()["error"] == "queue_full" and int(full.headers["retry-after"]) > 0
    assert (await stack.client.get("/tasks")).status_code == 200  # reading is still fine


async def test_a_tenant_past_its_queue_depth_gets_429_and_the_others_go_on(
        make_stack: Any, pool: asyncpg.Pool) -> None:
    stack = await make_stack(workers=0, LONGTASK_TENANT_QUEUE_DEPTH="3")
    batch = {"kind": "test.fanout", "params": {"items": [{"name": str(i)} for i in range(3)]}}
    assert (await stack.client.post("/tasks", json=batch)).status_code == 202
    over = await stack.client.post("/tasks", json={"kind": "test.echo"})
    assert over.status_code == 429
    assert over.json()["error"] == "tenant_queue_full" and int(over.headers["retry-after"]) > 0
    files = [("files", ("a.pdf", pdfs.many_pages_pdf(2), "application/pdf"))]
    assert (await stack.client.post("/documents", files=files)).status_code == 429
    other = await api_keys.create(pool, "tenant-b", "other")  # its own depth: empty
    async with httpx.AsyncClient(base_url=stack.web.url) as client:
        theirs = await client.post("/tasks", json={"kind": "test.echo"},
                                   headers={"Authorization": f"Bearer {other}"})
    assert theirs.status_code == 202
    stats = (await stack.client.get("/stats")).json()
    assert (stats["queued"], stats["queue_depth"]) == (3, 4)  # waiting: no worker runs
    mine = (await stack.client.get("/tasks")).json()["tasks"][0]["id"]
    assert (await stack.client.post(f"/tasks/{mine}/cancel")).status_code == 200
    again = await stack.client.post("/tasks", json={"kind": "test.echo"})
    assert again.status_code == 202  # its canceled items left its queue at once


async def test_cors_answers_the_allowed_origin_only(make_stack: Any) -> None:
    stack = await make_stack(workers=0, LONGTASK_CORS_ORIGINS=ALLOWED)
    ask = {"Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}
    async with httpx.AsyncClient(base_url=stack.web.url) as browser:
        ok = await browser.options("/tasks", headers={"Origin": ALLOWED, **ask})
        evil = await browser.options("/tasks", headers={"Origin": "https://evil.example", **ask})
        read = await browser.get("/tasks", headers={"Origin": ALLOWED,
                                                    "Authorization": f"Bearer {stack.key}"})
        denied = await browser.get("/tasks", headers={"Origin": "https://evil.example",
                                                      "Authorization": "Bearer wrong"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in ok.headers["access-control-allow-methods"]
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in ok.headers  # keys go in headers, not cookies
    assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
    assert read.headers["access-control-allow-origin"] == ALLOWED
    assert "retry-after" in read.headers["access-control-expose-headers"].lower()
    assert denied.status_code == 401 and "access-control-allow-origin" not in denied.headers
