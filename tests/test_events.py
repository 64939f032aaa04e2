"""The per-process hub: one subscription fanned out; a slow listener never holds up another,
and learns that it must resync instead of silently losing events. An event's time crosses Redis
unchanged."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from redis.asyncio import Redis

from longtask.broker import keys as redis_keys
from longtask.broker.hub import RESYNC, Hub
from longtask.broker.outbox import publish
from longtask.core.events import Event, format_at, now, parse_at
from tests.support import event_time, wait_for


async def test_a_slow_listener_overflows_alone_and_is_told_to_resync(redis: Redis) -> None:
    hub = Hub(redis, queue_size=4)
    await hub.start()
    try:
        async with hub.subscribe("t1") as fast, hub.subscribe("t1") as slow, \
                hub.subscribe("t2") as other:
            got: list[int] = []
            for seq in range(1, 11):
                await publish(redis, [Event("t1", seq, "progress", {"n": seq}, now())])

                async def arrived() -> bool:
                    item = await fast.get()
                    assert isinstance(item, Event)
                    got.append(item.seq)
                    return True

                await wait_for(arrived, timeout=5, what=f"event {seq}")
            assert got == list(range(1, 11))  # the fast listener lost nothing
            slow_got = [await slow.get() for _ in range(5)]
            assert [e.seq for e in slow_got[:4] if isinstance(e, Event)] == [1, 2, 3, 4]
            assert slow_got[4] == RESYNC  # overflowed: it must read Postgres, not guess
            assert other._queue.empty()  # another task's listener saw none of it
            assert hub.listeners == 3
        assert hub.listeners == 0
    finally:
        await hub.stop()


async def test_an_event_keeps_its_time_to_the_microsecond_through_redis(redis: Redis) -> None:
    berlin = timezone(timedelta(hours=1))
    stored = [Event("t1", 1, "item", {}, datetime(2026, 11, 30, 17, 4, 5, 123456, berlin)),
              Event("t1", 2, "item", {}, datetime(2026, 11, 30, 16, 4, 6, 0, timezone.utc)),
              Event("t1", 0, "delta", {"text": "hi"}, now())]
    hub = Hub(redis)
    await hub.start()
    try:
        async with hub.subscribe("t1") as sub:
            await publish(redis, stored)
            # a worker of the release before sends no `at`: the stream reads it from Postgres
            await redis.publish(redis_keys.task_channel("t1"), json.dumps(
                {"task_id": "t1", "seq": 3, "type": "item", "data": {}}))
            got = [await sub.get() for _ in range(4)]
    finally:
        await hub.stop()
    events = [e for e in got if isinstance(e, Event)]
    assert [e.at for e in events[:3]] == [e.at for e in stored]  # the same instants
    assert [e.at_text for e in events] == ["2026-11-30T16:04:05.123456Z",
                                           "2026-11-30T16:04:06.000000Z",
                                           stored[2].at_text, None]


def test_the_wire_form_of_an_event_time() -> None:
    at = datetime(2026, 11, 30, 16, 4, 5, 123456, timezone.utc)
    assert format_at(at) == "2026-11-30T16:04:05.123456Z"
    assert event_time(format_at(at)) == at
    # Postgres' JSON gives the session's offset, and drops trailing zeros of the fraction
    assert parse_at("2026-11-30T17:04:05.12345+01:00") == at.replace(microsecond=123450)
    assert parse_at("2026-11-30T16:04:05Z").tzinfo == timezone.utc
    with pytest.raises(ValueError):
        parse_at("2026-11-30T16:04:05")  # a time without a zone is not an event's time
