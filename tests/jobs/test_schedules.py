"""Recurring tasks: /schedules, and the scheduler duty that fires each slot once as a task, with
several workers at once, and once (not once per missed slot) after downtime."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from tests.conftest import Tenant
from tests.support import Worker, wait_for, wait_status

EVERY_2S = "*/2 * * * * *"  # seconds first


async def tasks_of(client: httpx.AsyncClient, schedule_id: str) -> list[dict[str, Any]]:
    answer = await client.get("/tasks", params={"schedule_id": schedule_id, "limit": 200})
    assert answer.status_code == 200, answer.text
    return sorted(answer.json()["tasks"], key=lambda t: t["run_at"])


async def test_every_2s_with_2_workers_for_10s_makes_5_tasks_each_once(make_stack: Any) -> None:
    stack = await make_stack(workers=2)
    answer = await stack.client.post("/schedules", json={
        "kind": "test.echo", "params": {"hello": "world"}, "cron": EVERY_2S})
    assert answer.status_code == 201, answer.text
    schedule = answer.json()
    first = datetime.fromisoformat(schedule["next_run_at"])
    assert first > datetime.now(timezone.utc) - timedelta(seconds=1) and first.second % 2 == 0
    started = time.monotonic()

    async def ten_seconds_later() -> bool:  # meanwhile, the next firing is always visible
        shown = (await stack.client.get(f"/schedules/{schedule['id']}")).json()
        assert shown["next_run_at"] is not None and not shown["paused"]
        return time.monotonic() - started >= 10

    await wait_for(ten_seconds_later, timeout=15, what="10 s of firings", interval=0.2)
    paused = (await stack.client.post(f"/schedules/{schedule['id']}/pause")).json()
    assert paused["paused"] and paused["next_run_at"] is None
    made = await tasks_of(stack.client, schedule["id"])
    assert 4 <= len(made) <= 6, [t["run_at"] for t in made]
    slots = [datetime.fromisoformat(t["run_at"]) for t in made]
    assert len(set(slots)) == len(slots)  # no slot fired twice
    assert all(b - a == timedelta(seconds=2) for a, b in zip(slots, slots[1:])), slots  # none missed
    assert paused["fired"] == len(made) and paused["last_task_id"] == made[-1]["id"]
    for task in made:
        assert (task["kind"], task["params"], task["schedule_id"]) == (
            "test.echo", {"hello": "world"}, schedule["id"])
        done = await wait_status(stack.client, task["id"], {"completed"})
        assert done["items"][0]["attempts"] == 1  # each ran once
        assert datetime.fromisoformat(done["started_at"]) >= datetime.fromisoformat(task["run_at"])


async def test_slots_missed_while_down_fire_once_on_recovery(tenant_a: Tenant,
                                                             live_worker: Worker,
                                                             pool: asyncpg.Pool) -> None:
    schedule = (await tenant_a.client.post("/schedules", json={
        "kind": "test.echo", "cron": EVERY_2S})).json()
    await tenant_a.client.post(f"/schedules/{schedule['id']}/pause")
    # what an hour with no worker leaves in Postgres: the slot due an hour ago, 1800 slots missed
    missed = await pool.fetchval(
        "UPDATE schedules SET paused = false, next_run_at = date_trunc('second', now())"
        " - interval '1 hour' WHERE id = $1 RETURNING next_run_at", schedule["id"])
    recovered = datetime.now(timezone.utc)

    async def fired_twice() -> list[dict[str, Any]] | None:
        made = await tasks_of(tenant_a.client, schedule["id"])
        return made if len(made) >= 2 else None

    made = await wait_for(fired_twice, timeout=10, what="the catch-up firing and a regular one")
    await tenant_a.client.post(f"/schedules/{schedule['id']}/pause")
    made = await tasks_of(tenant_a.client, schedule["id"])
    slots = [datetime.fromisoformat(t["run_at"]) for t in made]
    assert slots[0] == missed  # the missed slots fired once, as the oldest of them
    assert all(slot > recovered - timedelta(seconds=1) for slot in slots[1:])  # then on time
    assert len(set(slots)) == len(slots)


async def test_a_restart_of_every_worker_fires_the_missed_slots_once(
        make_stack: Any, worker: Worker, redis: Redis) -> None:
    """No worker runs for 6 s (3 slots pass), then one comes back: on recovery the missed slots
    make one task, not three, and the schedule goes on."""
    stack = await make_stack(workers=1)
    await asyncio.to_thread(worker.terminate)  # the session's worker would fire it too
    try:
        schedule = (await stack.client.post("/schedules", json={
            "kind": "test.echo", "cron": EVERY_2S})).json()

        async def made() -> list[dict[str, Any]]:
            return await tasks_of(stack.client, schedule["id"])

        await wait_for(made, timeout=10, what="a first firing")
        only = stack.workers[0]
        await asyncio.to_thread(only.terminate)
        stopped = datetime.now(timezone.utc)
        before = len(await made())

        async def down_for_6s() -> bool:
            assert len(await made()) == before  # nobody fires while no worker runs
            return datetime.now(timezone.utc) - stopped >= timedelta(seconds=6)

        await wait_for(down_for_6s, timeout=10, what="6 s without workers", interval=0.2)
        only.start()
        await only.ready(redis)
        back = datetime.now(timezone.utc)

        async def a_regular_firing_after_recovery() -> bool:
            return any(datetime.fromisoformat(t["run_at"]) >= back for t in await made())

        await wait_for(a_regular_firing_after_recovery, timeout=10, what="firing to go on")
        await stack.client.post(f"/schedules/{schedule['id']}/pause")
    finally:
        worker.start()
        await worker.ready(redis)
    tasks = await made()
    slots = [datetime.fromisoformat(t["run_at"]) for t in tasks]
    assert len(set(slots)) == len(slots)
    # nothing was made while no worker ran, so what was made after `stopped` came on recovery;
    # of that, the slots of the 6 s downtime (3 or 4 of them) made exactly one task
    down_until = stopped + timedelta(seconds=6)
    catch_up = [t for t in tasks if datetime.fromisoformat(t["created_at"]) > stopped
                and datetime.fromisoformat(t["run_at"]) < down_until]
    assert len(catch_up) == 1, [(t["run_at"], t["created_at"]) for t in tasks]
    assert down_until - datetime.fromisoformat(catch_up[0]["run_at"]) >= timedelta(seconds=4)


async def test_schedule_api(tenant_a: Tenant, tenant_b: Tenant) -> None:
    client = tenant_a.client
    created = await client.post("/schedules", json={"kind": "test.echo", "params": {"n": 1},
                                                     "cron": "30 4 * * *"})
    assert created.status_code == 201 and created.headers["location"].startswith("/schedules/")
    schedule = created.json()
    now = datetime.now(timezone.utc)
    following = datetime.fromisoformat(schedule["next_run_at"])
    assert (following.hour, following.minute, following.second) == (4, 30, 0)
    assert now < following <= now + timedelta(days=1)
    assert (schedule["cron"], schedule["paused"], schedule["fired"]) == ("30 4 * * *", False, 0)
    ident = schedule["id"]
    assert (await client.get(f"/schedules/{ident}")).json() == schedule
    listed = (await client.get("/schedules")).json()
    assert [s["id"] for s in listed["schedules"]] == [ident] and listed["next_cursor"] is None

    paused = (await client.post(f"/schedules/{ident}/pause")).json()
    assert paused["paused"] and paused["next_run_at"] is None
    resumed = (await client.post(f"/schedules/{ident}/resume")).json()
    assert not resumed["paused"] and resumed["next_run_at"] == schedule["next_run_at"]

    # another tenant's schedule is not there at all
    assert (await tenant_b.client.get(f"/schedules/{ident}")).status_code == 404
    assert (await tenant_b.client.get("/schedules")).json()["schedules"] == []
    assert (await tenant_b.client.delete(f"/schedules/{ident}")).status_code == 404
    assert (await client.delete(f"/schedules/{ident}")).status_code == 204
    gone = await client.get(f"/schedules/{ident}")
    assert (gone.status_code, gone.json()["error"]) == (404, "not_found")


async def test_bad_schedules_get_a_clear_4xx(tenant_a: Tenant) -> None:
    cases = [
        ({"kind": "test.echo", "cron": "every tuesday"}, 400, "invalid_cron"),
        ({"kind": "test.echo", "cron": "* * * * * * * *"}, 400, "invalid_cron"),
        ({"kind": "test.echo", "cron": "61 * * * *"}, 400, "invalid_cron"),
        ({"kind": "test.echo", "cron": "0 0 31 2 *"}, 400, "invalid_cron"),  # never fires
        ({"kind": "test.echo", "cron": 5}, 400, "invalid_cron"),
        ({"kind": "test.echo"}, 400, "invalid_cron"),
        ({"kind": "nope", "cron": "* * * * *"}, 422, "unknown_kind"),
        ({"kind": "test.fanout", "params": {"items": 5}, "cron": "* * * * *"}, 422,
         "invalid_params"),
    ]
    for body, status, code in cases:
        answer = await tenant_a.client.post("/schedules", json=body)
        assert (answer.status_code, answer.json()["error"]) == (status, code), body
    for path in ("/schedules/not-a-uuid", "/schedules/00000000-0000-0000-0000-000000000000"):
        assert (await tenant_a.client.post(f"{path}/pause")).status_code == 404
    bad_filter = await tenant_a.client.get("/tasks", params={"schedule_id": "x"})
    assert (bad_filter.status_code, bad_filter.json()["error"]) == (400, "invalid_query")
