"""The per-process hub: ONE pattern subscription per web process, fanned out to per-stream
bounded queues. A stream whose queue overflows, or that lived through a Redis reconnect, is
told to resync: it reads what it missed from Postgres, so nothing is lost and a slow client
never stalls the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from longtask.broker import keys as redis_keys
from longtask.core.events import Event

log = logging.getLogger(__name__)

RESYNC: Final = "resync"  # a marker in a subscription: read Postgres, live events were missed


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

    async def take(self) -> list[Event | str]:
        """What has queued up, at least one item (waiting for it): a busy stream sends the
        events that arrived together in one write."""
        items = [await self.get()]
        while items[-1] != RESYNC and not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items


class Hub:
    """One Redis pub/sub connection per process, fanned out to many subscriptions."""

    def __init__(self, redis: Redis, queue_size: int = 256,
                 on_listeners: Callable[[int], None] | None = None) -> None:
        """`on_listeners` hears the number of subscriptions each time it changes."""
        self._redis = redis
        self._queue_size = queue_size
        self._on_listeners = on_listeners
        self._listeners = 0
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
        return self._listeners

    @contextlib.asynccontextmanager
    async def subscribe(self, task_id: str) -> AsyncIterator[Subscription]:
        """Live events of one task, from the moment this returns (subscribe, then replay)."""
        sub = Subscription(self._queue_size)
        self._subs.setdefault(task_id, set()).add(sub)
        self._listeners_changed(+1)
        if not self._ready.is_set():
            sub.put(RESYNC)  # not connected now: the reader polls Postgres until we are
        try:
            yield sub
        finally:
            subs = self._subs.get(task_id, set())
            subs.discard(sub)
            if not subs:
                self._subs.pop(task_id, None)
            self._listeners_changed(-1)

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
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _listeners_changed(self, by: int) -> None:
        self._listeners += by
        if self._on_listeners is not None:
            self._on_listeners(self._listeners)

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
