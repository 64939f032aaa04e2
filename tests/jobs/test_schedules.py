"""Recurring tasks: /schedules, and the scheduler duty that fires each slot once as a task, with
several workers at once, and once (not once per missed slot) after downtime; a firing passes the
tenant's limits as a submit does, and one tenant's overdue schedules hold up nobody else's."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from longtask.broker import connection
from longtask.broker import keys as redis_keys
from longtask.config import Settings
from longtask.core.kinds import Registry
from longtask.service import cron
from longtask.service import schedules as schedules_service
from longtask.service.deps import Deps
from longtask.store import api_keys
from longtask.store import schedules as schedule_store
from tests.conftest import Services, Tenant
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


async def test_a_cron_more_frequent_than_the_minimum_is_refused(make_stack: Any) -> None:
    stack = await make_stack(workers=0, LONGTASK_MIN_SCHEDULE_SECONDS="60")
    for expression in ("*/10 * * * * *", "0,30 * * * * *", "* * * * * *"):
        answer = await stack.client.post("/schedules", json={"kind": "test.echo",
                                                             "cron": expression})
        assert (answer.status_code, answer.json()["error"]) == (422, "cron_too_frequent"), \
            expression
        assert "60 s" in answer.json()["detail"]
    for expression in ("* * * * *", "0,1 * * * *", "0 * * * * *", "@hourly", "59 0,23 * * *"):
        answer = await stack.client.post("/schedules", json={"kind": "test.echo",
                                                             "cron": expression})
        assert answer.status_code == 201, (expression, answer.text)


async def test_a_firing_over_the_tenants_limits_is_refused_and_recorded_while_others_fire(
        make_stack: Any, pool: asyncpg.Pool, redis: Redis) -> None:
    """A firing passes what a submit passes. Tenant A has used up its request rate, tenant C
    has its most open tasks: their firings make no task, and say why on the schedule, while
    tenant B's fires; once A's rate allows again, its next slot fires."""
    stack = await make_stack(workers=1, LONGTASK_RATE_LIMIT="4/minute",
                             LONGTASK_MAX_OPEN_TASKS="1")
    a = stack.client
    for _ in range(3):
        assert (await a.get("/tasks")).status_code == 200
    mine = (await a.post("/schedules", json={"kind": "test.echo", "cron": EVERY_2S})).json()
    async with _tenant_client(stack, pool, "tenant-b") as b, \
            _tenant_client(stack, pool, "tenant-c") as c:
        theirs = (await b.post("/schedules", json={"kind": "test.echo", "cron": EVERY_2S})).json()
        assert (await c.post("/tasks", json={"kind": "test.echo", "delay": 3600})).status_code \
            == 202  # pending for an hour: C's one open task
        full = (await c.post("/schedules", json={"kind": "test.echo", "cron": EVERY_2S})).json()

    async def schedules() -> dict[str, asyncpg.Record]:  # read in Postgres: a GET would count
        rows = await pool.fetch("SELECT id::text, fired, last_error, last_run_at FROM schedules")
        return {row["id"]: row for row in rows}

    async def refused_twice_and_b_fired() -> dict[str, asyncpg.Record] | None:
        rows = await schedules()
        seen = refusals.setdefault(mine["id"], set())
        if rows[mine["id"]]["last_error"] is not None:
            seen.add(rows[mine["id"]]["last_run_at"])
        ready = len(seen) >= 2 and rows[theirs["id"]]["fired"] >= 1 and \
            rows[full["id"]]["last_error"] is not None
        return rows if ready else None

    refusals: dict[str, set[datetime]] = {}
    rows = await wait_for(refused_twice_and_b_fired, timeout=15,
                          what="A refused at two slots, C refused, B fired")
    assert rows[mine["id"]]["fired"] == 0 and rows[mine["id"]]["last_error"]["code"] \
        == "rate_limited"
    assert rows[full["id"]]["fired"] == 0 and rows[full["id"]]["last_error"]["code"] \
        == "too_many_open_tasks"
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE schedule_id = $1",
                               mine["id"]) == 0

    # the rate's window passes (its counters go): the next slot fires, nothing was lost for good
    async for key in redis.scan_iter(match=f"{redis_keys.RATE_LIMIT_PREFIX}*"):
        await redis.delete(key)

    async def a_fired() -> bool:
        return bool((await schedules())[mine["id"]]["fired"] >= 1)

    await wait_for(a_fired, timeout=10, what="A's schedule to fire at a later slot")


async def test_one_tenants_overdue_schedules_wait_behind_one_firing_of_each_other_tenants(
        pool: asyncpg.Pool, services: Services) -> None:
    queue = "longtask:fairness"  # no worker of this queue runs: the test fires by hand
    made = {}
    for tenant, count, minutes_late in (("tenant-a", 5, 60), ("tenant-b", 1, 1)):
        for _ in range(count):
            schedule = await schedule_store.create(
                pool, tenant=tenant, kind="test.echo", params={}, cron="0 * * * *",
                next_run=cron.next_after, max_per_tenant=10, queue=queue)
            await pool.execute("UPDATE schedules SET next_run_at = now() - make_interval("
                               "mins => $2) WHERE id = $1", schedule.id, minutes_late)
            made.setdefault(tenant, []).append(schedule.id)
    redis = await connection.connect(services.redis.url)
    deps = Deps.open(Settings(queue_name=queue), pool, redis)
    registry = Registry.from_modules(["tests.kinds_for_tests"])
    try:
        # two firings: A's oldest, then B's (its slot is later than all of A's)
        assert await schedules_service.fire_due(deps, registry, limit=2) == 2
        fired = dict(await pool.fetch("SELECT tenant, sum(fired) FROM schedules GROUP BY 1"))
        assert fired == {"tenant-a": 1, "tenant-b": 1}
        # then the rest, in rounds, until nothing is due
        assert await schedules_service.fire_due(deps, registry) == 4
    finally:
        await deps.close()
        await redis.aclose()


async def test_a_schedule_more_frequent_than_the_minimum_fires_no_more_often_than_that(
        pool: asyncpg.Pool, services: Services) -> None:
    """One made before the rule (or under a lower minimum) thins out: after a firing its next
    slot is the first at least LONGTASK_MIN_SCHEDULE_SECONDS after the one that fired."""
    queue = "longtask:thinning"  # no worker of this queue runs: the test fires by hand
    every_second = await schedule_store.create(
        pool, tenant="tenant-a", kind="test.echo", params={}, cron="* * * * * *",
        next_run=cron.next_after, max_per_tenant=10, queue=queue)
    slot = await pool.fetchval("UPDATE schedules SET next_run_at = date_trunc('second', now())"
                               " WHERE id = $1 RETURNING next_run_at", every_second.id)
    redis = await connection.connect(services.redis.url)
    deps = Deps.open(Settings(queue_name=queue, min_schedule_seconds=60), pool, redis)
    try:
        assert await schedules_service.fire_due(deps, Registry.from_modules(
            ["tests.kinds_for_tests"])) == 1
    finally:
        await deps.close()
        await redis.aclose()
    following = await pool.fetchval("SELECT next_run_at FROM schedules WHERE id = $1",
                                    every_second.id)
    assert following == slot + timedelta(seconds=60)


class _tenant_client:
    def __init__(self, stack: Any, pool: asyncpg.Pool, tenant: str) -> None:
        self.stack, self.pool, self.tenant = stack, pool, tenant

    async def __aenter__(self) -> httpx.AsyncClient:
        key = await api_keys.create(self.pool, self.tenant, "tests")
        self.client = httpx.AsyncClient(base_url=self.stack.web.url, timeout=30,
                                        headers={"Authorization": f"Bearer {key}"})
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
