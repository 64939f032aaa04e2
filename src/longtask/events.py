"""Events on the move: PUBLISH after commit, and the per-process hub that relays them.

Postgres holds every event (store.events); Redis pub/sub only carries them fast. The hub keeps
ONE pattern subscription per web process and fans it out to per-stream bounded queues. A stream
whose queue overflows, or that lived through a Redis reconnect, is told to resync: it reads what
it missed from Postgres, so nothing is lost and a slow client never stalls the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from longtask import redis_keys
from longtask.store import events as event_store
from longtask.store.events import Event

log = logging.getLogger(__name__)

RESYNC: Final = "resync"  # a marker in a subscription: read Postgres, live events were missed
_PAGE = 500  # events read from Postgres at a time while replaying


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


async def announce_cancel(redis: Redis, task_id: str) -> None:
    """Tell every worker to stop the task's running items now (their heartbeat would in a few
    seconds anyway, from Postgres)."""
    try:
        await redis.publish(redis_keys.CANCEL_CHANNEL, task_id)
    except (RedisError, OSError) as exc:
        log.warning("cancel notice not sent (workers see it at their next heartbeat): %s", exc)


class Subscription:
    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[Event | str] = asyncio.Queue(maxsize)
        self._overflowed = False

    def put(self, item: Event | str) -> None:
        if self._overflowed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._overflowed = True  # drop; the reader resyncs from Postgres

    async def get(self) -> Event | str:
        if self._overflowed and self._queue.empty():
            self._overflowed = False
            return RESYNC
        return await self._queue.get()


class Hub:
    """One Redis pub/sub connection per process, fanned out to many subscriptions."""

    def __init__(self, redis: Redis, queue_size: int = 256) -> None:
        self._redis = redis
        self._queue_size = queue_size
        self._subs: dict[str, set[Subscription]] = {}
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10.0) -> None:
        self._runner = asyncio.create_task(self._run(), name="longtask-hub")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    @property
    def listeners(self) -> int:
        return sum(len(s) for s in self._subs.values())

    @contextlib.asynccontextmanager
    async def subscribe(self, task_id: str) -> AsyncIterator[Subscription]:
        """Live events of one task, from the moment this returns (subscribe, then replay)."""
        sub = Subscription(self._queue_size)
        self._subs.setdefault(task_id, set()).add(sub)
        if not self._ready.is_set():
            sub.put(RESYNC)  # not connected now: the reader polls Postgres until we are
        try:
            yield sub
        finally:
            subs = self._subs.get(task_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[task_id]

    async def _run(self) -> None:
        delay = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=False)
            try:
                await pubsub.psubscribe(redis_keys.TASK_CHANNEL_PATTERN)
                async for message in pubsub.listen():
                    if message["type"] == "psubscribe":
                        self._ready.set()
                        self._broadcast(RESYNC)  # whatever was published while we were away
                        delay = 0.1
                    elif message["type"] == "pmessage":
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("event hub lost Redis (%s); reconnecting in %.1fs", exc, delay)
            finally:
                self._ready.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _dispatch(self, raw: bytes | str) -> None:
        try:
            event = Event.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            log.warning("dropping a malformed event message")
            return
        for sub in self._subs.get(event.task_id, ()):
            sub.put(event)

    def _broadcast(self, marker: str) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.put(marker)


async def replay_then_tail(pool: asyncpg.Pool, hub: Hub, tenant: str, task_id: str,
                           after: int) -> AsyncGenerator[Event, None]:
    """Every event of a task above `after`, in order, no gaps, no repeats, ending with the
    task's final event: the history from Postgres, then the live feed.

    Subscribe first, then read the history, then pass on live events above the last one
    replayed: reading first would lose what is published in between. Sequence numbers are
    consecutive per task, so a gap in the live feed (or an overflow, or a Redis reconnect) is
    seen at once and filled from Postgres. The SSE stream and the WebSocket both consume this.
    """
    last = after
    async with hub.subscribe(task_id) as live:
        while True:
            backlog = await event_store.after(pool, tenant, task_id, last, _PAGE)
            for event in backlog:
                yield event
                last = event.seq
                if event.terminal:
                    return
            if len(backlog) == _PAGE:
                continue
            while True:
                item = await live.get()
                if item == RESYNC:
                    break
                assert isinstance(item, Event)
                if item.seq <= last:
                    continue
                if item.seq > last + 1:
                    break  # a gap: the missing events are committed; read them from Postgres
                yield item
                last = item.seq
                if item.terminal:
                    return
