"""Events on their way out: PUBLISH after commit, straight or through a batching outbox, and
the cancel notice to workers.

Postgres holds every event (store.events); Redis pub/sub only carries them fast, so a publish
that fails loses nothing: a listener sees the gap in sequence numbers and reads Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque

from redis.asyncio import Redis
from redis.exceptions import RedisError

from longtask.broker import keys as redis_keys
from longtask.core.events import Event

log = logging.getLogger(__name__)


async def publish(redis: Redis, events: list[Event]) -> None:
    """Send committed events to live listeners. A failure loses nothing: they are in Postgres."""
    if not events:
        return
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.publish(redis_keys.task_channel(event.task_id), json.dumps(event.as_dict()))
            await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("publish failed (clients will catch up from Postgres): %s", exc)


class Outbox:
    """A worker's events on their way to Redis, sent in order by one task: whatever queued up
    while the last send was in flight goes in the next pipeline. Under load, the events of many
    items cost one round trip instead of one each, and no item waits for Redis to go on.

    Only committed events are put here (they are in Postgres), so one that is never sent, the
    process having died first or Redis being away too long, is read from there by a listener
    that sees the gap in sequence numbers.
    """

    def __init__(self, redis: Redis, limit: int = 10_000, batch: int = 500) -> None:
        self._redis = redis
        self._pending: deque[Event] = deque(maxlen=limit)  # past the limit the oldest go
        self._batch = batch
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def send(self, events: list[Event]) -> None:
        if not events:
            return
        self._pending.extend(events)
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="outbox")

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was sent so far has gone out (or `timeout`); then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = [self._pending.popleft()
                         for _ in range(min(self._batch, len(self._pending)))]
                await publish(self._redis, batch)
            self._idle.set()


async def announce_cancel(redis: Redis, task_id: str) -> None:
    """Tell every worker to stop the task's running items now (their heartbeat would in a few
    seconds anyway, from Postgres)."""
    try:
        await redis.publish(redis_keys.CANCEL_CHANNEL, task_id)
    except (RedisError, OSError) as exc:
        log.warning("cancel notice not sent (workers see it at their next heartbeat): %s", exc)
