"""GET /tasks/{id}/ws: the SSE stream's events over a WebSocket, cancel and ping from the client,
heartbeats, and close codes that say why, against the real uvicorn."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from redis.asyncio import Redis
from websockets.asyncio.client import connect

from tests.conftest import Tenant
from tests.sockets import Socket, read_until_closed, socket_events, ws_url
from tests.support import (
    Web,
    Worker,
    assert_event_times,
    sse_timed_events,
    utc_now,
    wait_for,
    wait_status,
)


def auth(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.key}"}


async def test_a_socket_gets_the_same_events_as_an_sse_client(
        tenant_a: Tenant, web: Web, live_worker: Worker, redis: Redis) -> None:
    gate = "gate:ws-same"
    start = utc_now()
    task_id = (await tenant_a.client.post("/tasks", json={
        "kind": "test.echo", "params": {"gate": gate}})).json()["id"]
    over_sse = asyncio.create_task(sse_timed_events(tenant_a.client, task_id))
    over_ws = asyncio.create_task(socket_events(ws_url(web.url, task_id), auth(tenant_a),
                                                first={"after": 0}))
    await wait_for(lambda: _listeners(tenant_a, 2), what="both clients to subscribe")
    opened = utc_now()
    await redis.set(gate, 1)  # its progress and its end (Postgres functions) come live
    timed, ws = await asyncio.gather(over_sse, over_ws)
    end = utc_now()
    sse = [(seq, event, data) for seq, event, data, _ in timed]
    assert ws.events == sse
    # `at` beside id/event/data, each the time the SSE stream gives it in its data
    assert ws.times == [at for _, _, _, at in timed]
    assert_event_times([e[0] for e in ws.events], ws.times, start, end)
    assert [e[1] for e, at in zip(ws.events, ws.times) if at > opened][-5:] == [
        "progress", "progress", "progress", "item", "status"]  # stored after the gate opened
    assert [e[0] for e in ws.events] == list(range(1, len(ws.events) + 1))
    assert ws.events[-1][2]["status"] == "completed"
    assert (ws.code, ws.reason) == (1000, "task ended")
    # resuming: ?after=N (or a first message {"after": N}) gets exactly the rest, then closes,
    # each event replayed from Postgres with the time it had live
    half = sse[len(sse) // 2][0]
    rest = await socket_events(ws_url(web.url, task_id, after=str(half)), auth(tenant_a))
    assert rest.events == [e for e in sse if e[0] > half] and rest.code == 1000
    assert rest.times == [at for seq, _, _, at in timed if seq > half]
    rest = await socket_events(ws_url(web.url, task_id), auth(tenant_a), first={"after": half})
    assert rest.events == [e for e in sse if e[0] > half]
    assert rest.times == [at for seq, _, _, at in timed if seq > half]
    # at the end already: closed at once, nothing sent
    done = await socket_events(ws_url(web.url, task_id, after=str(sse[-1][0])), auth(tenant_a))
    assert (done.events, done.code, done.reason) == ([], 1000, "task ended")


async def _listeners(tenant: Tenant, at_least: int) -> bool:
    stats = (await tenant.client.get("/stats")).json()
    return int(stats.get("open_streams", 0)) >= at_least


async def test_cancel_from_the_socket(tenant_a: Tenant, web: Web, live_worker: Worker,
                                      redis: Redis) -> None:
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.forever"})).json()["id"]
    seen = Socket()
    async with connect(ws_url(web.url, task_id, after="0"), additional_headers=auth(tenant_a)) \
            as ws:
        async with asyncio.timeout(15):
            while not any(e[1] == "progress" for e in seen.events):  # it is running
                message = json.loads(await ws.recv())
                if "event" in message:
                    seen.add(message)
        asked, asked_at = time.monotonic(), utc_now()
        await ws.send(json.dumps({"action": "cancel"}))
        await read_until_closed(ws, seen, timeout=5)
    canceled = await wait_status(tenant_a.client, task_id, {"canceled"}, timeout=5)
    assert time.monotonic() - asked < 5
    assert asked_at < seen.times[-1] < utc_now()  # the cancel's event, stored when asked
    replies = [m for m in seen.others if m.get("type") == "canceled"]
    assert replies and replies[0]["task"]["status"] == "canceled"
    assert seen.events[-1][1:] == ("status", {"status": "canceled"})
    assert seen.events[-1][0] == canceled["last_seq"]  # nothing after the end
    assert (seen.code, seen.reason) == (1000, "task ended")
    assert await wait_for(lambda: redis.exists(f"stopped:{task_id}"), timeout=5,
                          what="the running item to stop")


async def test_ping_pong_and_heartbeats(tenant_a: Tenant, web: Web, live_worker: Worker) -> None:
    """The test server beats every 2 s (LONGTASK_SSE_PING_SECONDS); production every 15 s."""
    task_id = (await tenant_a.client.post("/tasks", json={
        "kind": "test.echo", "params": {"gate": "never"}})).json()["id"]
    async with connect(ws_url(web.url, task_id), additional_headers=auth(tenant_a)) as ws:
        await ws.send(json.dumps({"action": "ping"}))  # a first message without `after`: from 0
        await ws.send("not json")
        await ws.send(json.dumps({"action": "dance"}))
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while {"type": "ping"} not in got:
                got.append(json.loads(await ws.recv()))
    kinds = [m.get("error") or m.get("type") or m.get("event") for m in got]
    assert kinds[0] == "pong"  # answered before the replay starts
    assert {"invalid_message", "invalid_action", "status", "ping"} <= set(kinds)
    await tenant_a.client.post(f"/tasks/{task_id}/cancel")


async def test_a_socket_waiting_for_its_first_message_gets_pings(tenant_a: Tenant, web: Web,
                                                                 live_worker: Worker) -> None:
    """Without ?after= the socket sends no event until the client's first message, but it pings
    from the moment it opens: a proxy would drop it otherwise."""
    task_id = (await tenant_a.client.post("/tasks", json={
        "kind": "test.echo", "params": {"gate": "never"}})).json()["id"]
    async with connect(ws_url(web.url, task_id), additional_headers=auth(tenant_a)) as ws:
        async with asyncio.timeout(10):
            first = json.loads(await ws.recv())
            assert first == {"type": "ping"}
            await ws.send(json.dumps({"after": 0}))  # and then the events come
            while "event" not in (message := json.loads(await ws.recv())):
                assert message == {"type": "ping"}
    assert (message["id"], message["event"]) == (1, "status")
    await tenant_a.client.post(f"/tasks/{task_id}/cancel")


async def test_refusals_close_with_a_code_that_says_why(tenant_a: Tenant, tenant_b: Tenant,
                                                        web: Web, live_worker: Worker) -> None:
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    other = (await tenant_a.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    await wait_status(tenant_a.client, task_id, {"completed"})
    issued = (await tenant_a.client.post(f"/tasks/{task_id}/stream-token")).json()
    token = issued["token"]
    assert issued["ws_url"] == f"/tasks/{task_id}/ws?token={token}"

    async def closed(url: str, headers: dict[str, str] | None = None) -> tuple[Any, ...]:
        seen = await socket_events(url, headers or {}, timeout=10)
        return seen.code, seen.reason, [m.get("error") for m in seen.others], len(seen.events)

    assert await closed(ws_url(web.url, task_id, after="0")) == (
        4401, "missing_key", ["missing_key"], 0)
    assert await closed(ws_url(web.url, task_id, after="0"), {"Authorization": "Bearer nope"}) \
        == (4401, "invalid_key", ["invalid_key"], 0)
    assert await closed(ws_url(web.url, task_id, after="0"), auth(tenant_b)) == (
        4404, "not_found", ["not_found"], 0)
    assert await closed(ws_url(web.url, "not-a-uuid", after="0"), auth(tenant_a)) == (
        4404, "not_found", ["not_found"], 0)
    assert await closed(ws_url(web.url, other, token=token, after="0")) == (
        4401, "invalid_token", ["invalid_token"], 0)
    assert (await closed(ws_url(web.url, task_id, after="x"), auth(tenant_a)))[:2] == (
        4400, "invalid_query")
    bad_first = await socket_events(ws_url(web.url, task_id), auth(tenant_a),
                                    first={"after": -1}, timeout=10)
    assert (bad_first.code, bad_first.reason) == (4400, "invalid_after")
    # a stream token opens the socket (browsers cannot send headers on a WebSocket either)
    by_token = await socket_events(f"ws{web.url.removeprefix('http')}{issued['ws_url']}&after=0",
                                   {})
    assert by_token.code == 1000 and by_token.events[-1][2]["status"] == "completed"


async def test_server_shutdown_closes_open_sockets_with_1012(make_stack: Any) -> None:
    stack = await make_stack(workers=0)  # the task stays pending: nothing left running after
    task_id = (await stack.client.post("/tasks", json={
        "kind": "test.echo", "params": {"gate": "never"}})).json()["id"]
    async with connect(ws_url(stack.web.url, task_id, after="0"),
                       additional_headers={"Authorization": f"Bearer {stack.key}"}) as ws:
        seen = Socket()
        first = json.loads(await ws.recv())
        assert first["event"] == "status"
        stopping = asyncio.create_task(asyncio.to_thread(stack.web.terminate))
        await read_until_closed(ws, seen, timeout=15)
        await stopping
    assert seen.code == 1012  # "service restart": reconnect (to another web process) and resume
