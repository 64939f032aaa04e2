"""A browser's own EventSource against the stream limits, in Debian's chromium: refused while
its tenant has its most streams open, it comes back by itself and gets every event."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from longtask.broker import keys as redis_keys
from tests.support import wait_for
from tests.web.driver import Scenario, browser_or_skip

pytestmark = pytest.mark.timeout(300)


async def test_an_event_source_over_the_stream_limit_comes_back_and_gets_every_event(
        make_stack: Any, redis: Redis) -> None:
    browser_or_skip()
    stack = await make_stack(workers=1, LONGTASK_MAX_STREAMS="1")
    gate = "gate:eventsource"
    task_id = (await stack.client.post("/tasks", json={"kind": "test.echo",
                                                       "params": {"gate": gate}})).json()["id"]
    events_url = (await stack.client.post(f"/tasks/{task_id}/stream-token")).json()["events_url"]
    held = stack.client.stream("GET", f"/tasks/{task_id}/events")  # the tenant's one place
    await held.__aenter__()

    async def one_open() -> bool:
        return bool(await redis.zcard(redis_keys.open_streams("tenant-a")) == 1)

    await wait_for(one_open, what="the held stream")
    async with Scenario("eventsource_limit.mjs", stack.web, stack.key,
                        EVENTS_URL=events_url) as page:
        refused = await page.message()
        assert refused["refused"] and refused["state"] != 2  # not CLOSED: it will come back
        await held.__aexit__(None, None, None)
        await redis.set(gate, 1)
        await page.go()
        seen = await page.seen()

    assert seen["refusals"][0]["error"] == "too_many_streams"
    assert seen["drops"] >= 1 and seen["state_after_drop"] != 2  # it reconnected by itself
    ids = [e["id"] for e in seen["events"]]
    assert ids == list(range(1, len(ids) + 1))  # every event, once, in order
    assert seen["events"][-1]["status"] == "completed"
    assert seen["page_errors"] == []
