"""The per-process hub: one subscription fanned out; a slow listener never holds up another,
and learns that it must resync instead of silently losing events."""

from __future__ import annotations

from redis.asyncio import Redis

from longtask.broker.hub import RESYNC, Hub
from longtask.broker.outbox import publish
from longtask.core.events import Event
from tests.support import wait_for


async def test_a_slow_listener_overflows_alone_and_is_told_to_resync(redis: Redis) -> None:
    hub = Hub(redis, queue_size=4)
    await hub.start()
    try:
        async with hub.subscribe("t1") as fast, hub.subscribe("t1") as slow, \
                hub.subscribe("t2") as other:
            got: list[int] = []
            for seq in range(1, 11):
                await publish(redis, [Event("t1", seq, "progress", {"n": seq})])

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
