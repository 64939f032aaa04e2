"""Open streams per tenant (SSE and WebSocket together, across web processes): over the cap a
plain client gets 429, a browser's EventSource a 200 it comes back from, a socket 4429; the
streams already open go on; a place frees when a stream closes, or when its web process died."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import httpx
from httpx_sse import aconnect_sse
from redis.asyncio import Redis

from longtask.broker import keys as redis_keys
from longtask.broker.streams import OpenStreams
from longtask.core.errors import LimitReached
from longtask.store import api_keys
from tests.sockets import socket_events, ws_url
from tests.support import sse_events, wait_for, wait_status


async def open_count(redis: Redis, tenant: str) -> int:
    return int(await redis.zcard(redis_keys.open_streams(tenant)))


async def test_a_stream_over_the_cap_is_refused_and_the_open_ones_go_on(
        make_stack: Any, redis: Redis, pool: asyncpg.Pool) -> None:
    stack = await make_stack(workers=1, LONGTASK_MAX_STREAMS="2", LONGTASK_RATE_LIMIT="3/minute")
    client, gate = stack.client, "gate:stream-cap"
    task_id = (await client.post("/tasks", json={"kind": "test.echo",
                                                 "params": {"gate": gate}})).json()["id"]
    path = f"/tasks/{task_id}/events"
    first = client.stream("GET", path)  # one to close by hand
    held = await first.__aenter__()
    assert held.status_code == 200
    second = asyncio.create_task(sse_events(client, task_id))
    await wait_for(lambda: _is(open_count(redis, "tenant-a"), 2), what="two open streams")

    # a third: 429 for a plain client; a browser's EventSource gets a 200 that tells it to come
    # back later (it would never retry a 429); a socket closes with 4429
    plain = await client.get(path)
    assert plain.status_code == 429 and plain.json()["error"] == "too_many_streams"
    assert int(plain.headers["retry-after"]) > 0
    browser = await client.get(path, headers={"Accept": "text/event-stream"})
    assert browser.status_code == 200
    assert browser.headers["content-type"].startswith("text/event-stream")
    frames = _fields(browser.text)
    assert 5000 <= int(frames["retry"]) <= 20000 and frames["event"] == "error"
    refusal = json.loads(frames["data"])
    assert refusal["error"] == "too_many_streams" and refusal["retry_after"] > 0
    socket = await socket_events(ws_url(stack.web.url, task_id, after="0"),
                                 {"Authorization": f"Bearer {stack.key}"}, timeout=10)
    assert (socket.code, socket.reason, socket.events) == (4429, "too_many_streams", [])
    assert socket.others[0]["retry_after"] > 0
    # stream connects (5 so far) do not count against the request rate (3/minute here): this is
    # the second request
    assert (await client.get(f"/tasks/{task_id}")).status_code == 200
    # the cap is per tenant
    other_key = await api_keys.create(pool, "tenant-b", "other")
    async with httpx.AsyncClient(base_url=stack.web.url, timeout=30,
                                 headers={"Authorization": f"Bearer {other_key}"}) as other:
        theirs = (await other.post("/tasks", json={"kind": "test.echo"})).json()["id"]
        assert (await sse_events(other, theirs))[-1][2]["status"] == "completed"

    # a stream that closes frees its place at once
    await first.__aexit__(None, None, None)
    await wait_for(lambda: _is(open_count(redis, "tenant-a"), 1), what="the place to free")
    third = asyncio.create_task(sse_events(client, task_id))
    await wait_for(lambda: _is(open_count(redis, "tenant-a"), 2), what="the third stream")
    await redis.set(gate, 1)
    for events in await asyncio.gather(second, third):
        assert [e[0] for e in events] == list(range(1, len(events) + 1))
        assert events[-1][2]["status"] == "completed"  # every event, to the end
    await wait_for(lambda: _is(open_count(redis, "tenant-a"), 0), what="ended streams to free")


async def test_an_event_source_refused_comes_back_and_gets_every_event(
        make_stack: Any, redis: Redis) -> None:
    """What a browser does with the answer: wait `retry` ms, reconnect, and get the stream."""
    stack = await make_stack(workers=1, LONGTASK_MAX_STREAMS="1")
    client = stack.client
    task_id = (await client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    await wait_status(client, task_id, {"completed"})
    waiting = (await client.post("/tasks", json={"kind": "test.echo",
                                                  "params": {"gate": "never"}})).json()["id"]
    held = client.stream("GET", f"/tasks/{waiting}/events")  # the tenant's one place
    await held.__aenter__()
    await wait_for(lambda: _is(open_count(redis, "tenant-a"), 1), what="one open stream")
    tries = 0
    async with asyncio.timeout(30):
        while True:  # EventSource's loop: after the stream ends, wait `retry` ms, reconnect
            tries += 1
            async with aconnect_sse(client, "GET", f"/tasks/{task_id}/events") as source:
                assert source.response.status_code == 200
                seen = [sse async for sse in source.aiter_sse()]
            if seen[-1].event != "error":
                break
            assert seen[-1].retry is not None and seen[-1].retry >= 1000
            if tries == 1:
                await held.__aexit__(None, None, None)  # the place frees meanwhile
            await asyncio.sleep(seen[-1].retry / 1000 / 50)  # the browser's wait, shortened
    events = [json.loads(sse.data) for sse in seen if sse.data]
    assert tries >= 2 and events[-1]["status"] == "completed"
    await client.post(f"/tasks/{waiting}/cancel")


async def test_stream_connects_have_a_rate_of_their_own(make_stack: Any) -> None:
    stack = await make_stack(workers=0, LONGTASK_STREAM_RATE="2/minute")
    client = stack.client
    task_id = (await client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    for _ in range(2):
        async with client.stream("GET", f"/tasks/{task_id}/events") as opened:
            assert opened.status_code == 200
    over = await client.get(f"/tasks/{task_id}/events")
    assert over.status_code == 429 and over.json()["error"] == "rate_limited"
    assert "stream connect rate" in over.json()["detail"] and int(over.headers["retry-after"]) > 0
    assert (await client.get(f"/tasks/{task_id}")).status_code == 200  # requests go on


async def test_a_head_request_gives_its_place_back(tenant_a: Any, redis: Redis) -> None:
    """HEAD on the stream answers the headers only: the body that would give the place back
    never runs."""
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.echo",
                                                          "params": {"gate": "never"}})).json()["id"]
    for _ in range(3):
        answer = await tenant_a.client.head(f"/tasks/{task_id}/events")
        assert answer.status_code == 200
    await wait_for(lambda: _is(open_count(redis, "tenant-a"), 0), what="the places to free")
    await tenant_a.client.post(f"/tasks/{task_id}/cancel")


async def test_the_places_of_a_web_process_that_died_free_when_their_leases_run_out(
        redis: Redis, pool: asyncpg.Pool) -> None:
    dead = OpenStreams(redis, max_per_tenant=2, lease_seconds=1)  # never renews, never closes
    await dead.open("tenant-a")
    await dead.open("tenant-a")
    alive = OpenStreams(redis, max_per_tenant=2)
    try:
        await alive.open("tenant-a")
        raise AssertionError("a third stream was let in")
    except LimitReached as exc:
        assert exc.code == "too_many_streams"

    async def let_in() -> bool:
        try:
            await alive.open("tenant-a")
            return True
        except LimitReached:
            return False

    await wait_for(let_in, timeout=10, what="the dead process's leases to run out")
    # a live process's leases are renewed, and put back if Redis lost them
    await redis.delete(redis_keys.open_streams("tenant-a"))
    await alive.renew()
    assert await open_count(redis, "tenant-a") == 1
    await alive.stop()
    assert await open_count(redis, "tenant-a") == 0


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


def _fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name:
            out[name] = value.strip()
    return out
