"""GET /tasks/{id}/events: ordered, gap-free, resumable, shared across web processes; every
event says when it was stored, the same live and replayed."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from longtask.broker import keys as redis_keys
from longtask.store import events as event_store
from tests.conftest import Services, Tenant
from tests.support import (
    Web,
    Worker,
    assert_event_times,
    sse_events,
    sse_timed_events,
    utc_now,
    wait_for,
    wait_status,
)

STEPS = {"kind": "test.fanout", "params": {"items": [{"name": f"f{i}"} for i in range(4)]}}


Timed = list[tuple[int, str, dict[str, Any], Any]]


async def reconnect_gets_exactly_what_was_missed(
        client: httpx.AsyncClient, redis: Redis) -> tuple[str, Timed, Timed]:
    """A client that drops after two events and comes back with Last-Event-ID gets the rest:
    nothing missed, nothing twice, each event at the same time as in a replay of the whole.
    Returns the task's id, the events before the drop and those after."""
    gate = f"gate:reconnect:{uuid.uuid4().hex[:8]}"
    task_id: str = (await client.post(
        "/tasks", json={"kind": "test.echo", "params": {"gate": gate}})).json()["id"]
    first = await sse_timed_events(client, task_id, limit=2)  # then the client drops
    await redis.set(gate, 1)  # the task goes on while the client is away
    await wait_status(client, task_id, {"completed"})
    rest = await sse_timed_events(client, task_id, last_event_id=first[-1][0])
    whole = await sse_timed_events(client, task_id)
    assert first + rest == whole
    _assert_consecutive(whole)
    return task_id, first, rest


def _assert_consecutive(events: list[tuple[Any, ...]], start: int = 1) -> None:
    assert [e[0] for e in events] == list(range(start, start + len(events)))


async def test_every_event_in_order_with_id_equal_to_sequence(tenant_a: Tenant,
                                                              live_worker: Worker) -> None:
    task_id = (await tenant_a.client.post("/tasks", json=STEPS)).json()["id"]
    live = await sse_events(tenant_a.client, task_id)  # subscribes while the task runs
    _assert_consecutive(live)
    assert live[0][1:] == ("status", {"status": "pending", "items_total": 4})
    assert live[-1][1] == "status" and live[-1][2]["status"] == "completed"
    per_item = {}
    for _, event, data in live:
        if event in ("item", "progress"):
            per_item.setdefault(data["name"], []).append(data.get("status") or data["stage"])
    assert per_item == {f"f{i}": ["running", "work", "completed"] for i in range(4)}
    percents = [d["task_percent"] for _, e, d in live if e == "progress"]
    assert percents == sorted(percents)  # overall progress never goes backwards


async def test_reconnect_with_last_event_id_gets_exactly_what_was_missed(
        tenant_a: Tenant, live_worker: Worker, redis: Redis) -> None:
    task_id, first, rest = await reconnect_gets_exactly_what_was_missed(tenant_a.client, redis)
    assert len(rest) >= 6
    via_query = await sse_timed_events(tenant_a.client, task_id,
                                       params={"after": str(first[-1][0])})
    assert via_query == rest


async def test_every_event_says_when_it_was_stored_the_same_live_and_replayed(
        tenant_a: Tenant, live_worker: Worker) -> None:
    start = utc_now()
    # deferred, so the stream is open before any item is claimed: the events of the claims,
    # the progress reports and the finishes (Postgres functions, then Redis) all come live
    task_id = (await tenant_a.client.post("/tasks", json={**STEPS, "delay": 2})).json()["id"]
    streaming = asyncio.create_task(sse_timed_events(tenant_a.client, task_id))
    await wait_for(lambda: _open_streams(tenant_a, 1), what="the stream to open")
    opened = utc_now()
    live = await streaming
    end = utc_now()
    _assert_consecutive(live)
    assert_event_times([e[0] for e in live], [e[3] for e in live], start, end)
    ran = [e for e in live if e[0] > 1]  # all but the task's `pending` (seq 1, replayed)
    assert ran[0][3] > opened, "the task ran before the stream opened: nothing came live"
    assert {("status", "running"), ("item", "running"), ("progress", "work"),
            ("item", "completed"), ("status", "completed")} == {
        (event, data.get("status") or data.get("stage")) for _, event, data, _ in ran}
    replayed = await sse_timed_events(tenant_a.client, task_id)  # from Postgres, after the end
    assert replayed == live  # the same events, each with the same time to the microsecond
    resumed = await sse_timed_events(tenant_a.client, task_id, last_event_id=live[3][0])
    assert resumed == live[4:]


async def test_an_event_published_without_its_time_is_read_from_postgres(
        tenant_a: Tenant, live_worker: Worker, redis: Redis, pool: asyncpg.Pool) -> None:
    """A worker of the release before `at` (still running during a deploy) publishes events
    without it: the stream takes them from Postgres, which has the time."""
    gate = "gate:old-worker"
    task_id = (await tenant_a.client.post(
        "/tasks", json={"kind": "test.echo", "params": {"gate": gate}})).json()["id"]
    await wait_status(tenant_a.client, task_id, {"running"})
    streaming = asyncio.create_task(sse_timed_events(tenant_a.client, task_id))
    await wait_for(lambda: _open_streams(tenant_a, 1), what="the stream to open")
    old = await event_store.append(pool, task_id, "note", {"n": 1})
    assert old is not None
    await redis.publish(redis_keys.task_channel(task_id), json.dumps(
        {"task_id": task_id, "seq": old.seq, "type": "note", "data": {"n": 1}}))
    await redis.set(gate, 1)
    live = await streaming
    _assert_consecutive(live)
    assert (old.seq, "note", {"n": 1}, old.at) in live


async def _open_streams(tenant: Tenant, at_least: int) -> bool:
    stats = (await tenant.client.get("/stats")).json()
    return int(stats.get("open_streams", 0)) >= at_least


async def test_reconnect_mid_stream_while_live(tenant_a: Tenant, live_worker: Worker) -> None:
    task_id = (await tenant_a.client.post("/tasks", json=STEPS)).json()["id"]
    got: list[tuple[int, str, dict]] = []
    while not got or not (got[-1][1] == "status" and got[-1][2]["status"] == "completed"):
        got += await sse_events(tenant_a.client, task_id, limit=3,
                                last_event_id=got[-1][0] if got else None)
    _assert_consecutive(got)
    assert got == await sse_events(tenant_a.client, task_id)


async def test_after_completion_the_whole_history_then_close(tenant_a: Tenant,
                                                             live_worker: Worker) -> None:
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    task = await wait_status(tenant_a.client, task_id, {"completed"})
    history = await sse_events(tenant_a.client, task_id, timeout=5)  # closes by itself
    assert [e[0] for e in history] == list(range(1, task["last_seq"] + 1))
    # at the end already: 204 tells a browser's EventSource to stop reconnecting
    done = await tenant_a.client.get(f"/tasks/{task_id}/events",
                                     headers={"Last-Event-ID": str(task["last_seq"])})
    assert done.status_code == 204


@pytest.fixture
async def web_b(services: Services, migrated: str) -> AsyncIterator[Web]:
    proc = Web("web-b", services.env, services.root / "logs").start()
    try:
        yield await proc.ready()
    finally:
        proc.terminate()


async def test_two_web_processes_see_the_same_events(tenant_a: Tenant, web_b: Web,
                                                     live_worker: Worker, redis: Redis) -> None:
    gate = "gate:two-webs"
    task_id = (await tenant_a.client.post(
        "/tasks", json={"kind": "test.echo", "params": {"gate": gate}})).json()["id"]
    async with httpx.AsyncClient(base_url=web_b.url, headers=tenant_a.client.headers,
                                 timeout=30) as client_b:
        on_a = asyncio.create_task(sse_timed_events(tenant_a.client, task_id))
        on_b = asyncio.create_task(sse_timed_events(client_b, task_id))
        await redis.set(gate, 1)
        a, b = await asyncio.gather(on_a, on_b)
    assert a == b  # each event at the same time through either process's hub
    _assert_consecutive(a)
    assert a[-1][2]["status"] == "completed"


async def test_stream_token_for_browsers(tenant_a: Tenant, tenant_b: Tenant, web: Web,
                                         live_worker: Worker) -> None:
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    other = (await tenant_a.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    token = (await tenant_a.client.post(f"/tasks/{task_id}/stream-token")).json()["token"]
    await wait_status(tenant_a.client, task_id, {"completed"})
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as browser:
        events = await sse_events(browser, task_id, params={"token": token})
        assert events[-1][2]["status"] == "completed"
        wrong_task = await browser.get(f"/tasks/{other}/events", params={"token": token})
        forged = await browser.get(f"/tasks/{task_id}/events", params={"token": token[:-2] + "xx"})
        # a token is not a key: it opens the stream and nothing else
        not_a_key = await browser.get(f"/tasks/{task_id}",
                                      headers={"Authorization": f"Bearer {token}"})
    assert (wrong_task.status_code, wrong_task.json()["error"]) == (401, "invalid_token")
    assert (forged.status_code, forged.json()["error"]) == (401, "invalid_token")
    assert not_a_key.status_code == 401


async def test_quiet_streams_get_keepalive_pings(tenant_a: Tenant, live_worker: Worker) -> None:
    """The test server pings every 2 s (LONGTASK_SSE_PING_SECONDS); production every 15 s."""
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.echo",
                                                          "params": {"gate": "never"}})).json()["id"]
    async with tenant_a.client.stream("GET", f"/tasks/{task_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        async with asyncio.timeout(10):
            async for line in response.aiter_lines():
                if line.startswith(": ping"):
                    break
    await tenant_a.client.post(f"/tasks/{task_id}/cancel")
