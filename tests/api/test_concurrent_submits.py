"""Submits that arrive together share a commit (db.group); what each client sees is what it
would see alone: its own 202 and task, its own 4xx, the same task for a repeated
Idempotency-Key, and every accepted task runs."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.conftest import Tenant
from tests.support import Worker, wait_for


async def test_concurrent_submits_each_get_their_own_answer(
        tenant_a: Tenant, tenant_b: Tenant, live_worker: Worker, pool: asyncpg.Pool) -> None:
    async def post(client: Tenant, body: object, key: str | None = None) -> tuple[int, dict]:
        headers = {"Idempotency-Key": key} if key else {}
        response = await client.client.post("/tasks", json=body, headers=headers)
        return response.status_code, response.json()

    good = {"kind": "test.echo", "params": {}}
    answers = await asyncio.gather(
        *(post(tenant_a, good) for _ in range(20)),
        post(tenant_a, {"kind": "no.such.kind"}),
        post(tenant_a, good, key="once"), post(tenant_a, good, key="once"),
        post(tenant_a, {"kind": "test.echo", "params": {"x": 1}}, key="twice"),
        post(tenant_a, {"kind": "test.echo", "params": {"x": 2}}, key="twice"),
        *(post(tenant_b, good) for _ in range(19)))
    codes = [code for code, _ in answers]
    assert codes[:20] == [202] * 20 and codes[25:] == [202] * 19
    assert codes[20] == 422 and answers[20][1]["error"] == "unknown_kind"
    (once, first), (again, second) = answers[21:23]
    assert (once, again) == (202, 202) and first["id"] == second["id"]  # one task for the key
    # the same key for two different requests: one is taken, the other is refused
    assert sorted(code for code, _ in answers[23:25]) == [202, 409]
    assert {body.get("error") for code, body in answers[23:25] if code == 409} \
        == {"idempotency_key_reused"}
    ids = {body["id"] for code, body in answers if code == 202}
    assert len(ids) == 20 + 1 + 1 + 19

    async def all_ran() -> bool:
        return await pool.fetchval(
            "SELECT count(*) FROM tasks WHERE status = 'completed'") == len(ids)

    await wait_for(all_ran, timeout=60, what="every accepted task to complete")
    owners = await pool.fetch("SELECT tenant, count(*) AS n FROM tasks GROUP BY tenant ORDER BY 1")
    assert [(r["tenant"], r["n"]) for r in owners] == [("tenant-a", 22), ("tenant-b", 19)]
