"""A 20-file batch: canceled mid-run it stops within 5 s and leaves no partial chunks; with two
web and two worker processes its files spread over both workers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx

from longtask.testing.fake_openai import FakeOpenAI
from tests.conftest import Services
from tests.faults.test_worker_crash import FILES, batch
from tests.support import Web, fake_providers, sse_events, wait_for


async def test_cancel_a_20_file_batch_mid_run(make_stack: Any, pool: asyncpg.Pool) -> None:
    with FakeOpenAI(latency=0.3) as fake:
        stack = await make_stack(workers=2, **fake_providers(fake))
        task_id = (await stack.client.post("/documents", files=batch(6))).json()["id"]

        async def midway() -> bool:
            return bool(await pool.fetchval(
                "SELECT items_done >= 2 AND EXISTS (SELECT 1 FROM task_items WHERE task_id = $1"
                " AND status = 'running' AND stage = 'embed') FROM tasks WHERE id = $1", task_id))

        await wait_for(midway, timeout=60, what="the batch to be embedding")
        canceled_at = time.monotonic()
        response = await stack.client.post(f"/tasks/{task_id}/cancel")
        assert response.status_code == 200 and response.json()["status"] == "canceled"

        async def stopped() -> bool:
            return not await pool.fetchval(
                "SELECT count(*) FROM task_items WHERE task_id = $1 AND status = 'running'",
                task_id)

        await wait_for(stopped, timeout=5, what="every running item to stop")
        took = time.monotonic() - canceled_at
        statuses = dict(await pool.fetch(
            "SELECT status, count(*) FROM task_items WHERE task_id = $1 GROUP BY 1", task_id))
        assert statuses.get("canceled", 0) > 0 and sum(statuses.values()) == FILES
        # files that finished keep their chunks; no chunk of an unfinished file is left
        assert await pool.fetchval(
            "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE d.status <> 'indexed' OR c.generation <> d.generation") == 0
        indexed = await pool.fetchval("SELECT count(*) FROM documents WHERE status = 'indexed'")
        assert indexed == statuses.get("completed", 0)
        events = await sse_events(stack.client, task_id)
        assert events[-1][2] == {"status": "canceled"}
        print(f"cancel of a {FILES}-file batch: running items stopped in {took:.2f}s; "
              f"{statuses}")


async def test_two_webs_two_workers_spread_one_batch(make_stack: Any, services: Services,
                                                     pool: asyncpg.Pool) -> None:
    with FakeOpenAI(latency=0.2) as fake:
        stack = await make_stack(workers=2, **fake_providers(fake))
        web_b = await Web("stack-web-b", stack.env, services.root / "logs").start().ready()
        try:
            task_id = (await stack.client.post("/documents", files=batch(7))).json()["id"]
            async with httpx.AsyncClient(base_url=web_b.url, headers=stack.client.headers,
                                         timeout=60) as on_b:
                events = await asyncio.wait_for(sse_events(on_b, task_id, timeout=180), 200)
        finally:
            web_b.terminate()
        assert events[-1][2]["status"] == "completed"
        workers = {d["worker"].split(":")[1] for _, e, d in events
                   if e == "item" and d["status"] == "running"}
        assert workers == {str(w.pid) for w in stack.workers}  # both took a share
