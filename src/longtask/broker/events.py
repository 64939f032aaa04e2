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
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Final

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from longtask.broker import keys as redis_keys
from longtask.core.errors import NotFound
from longtask.store import events as event_store
from longtask.store.events import DELTA, TEXT, Event

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
                           after: int) -> AsyncGenerator[list[Event], None]:
    """Every event of a task above `after`, in order, no gaps, no repeats, ending with the
    task's final event: the history from Postgres, then the live feed. In batches (a page of
    history, the live events that queued up meanwhile), so a consumer can write each in one go.

    The first batch comes as soon as the task has been read, even when it is empty, so a caller
    can answer before anything happens: NotFound if there is no such task, and no batch at all
    (the generator ends) if the task has ended and every event up to `after` was seen already.
    A task deleted later simply ends the feed.

    Subscribe first, then read the history, then pass on live events above the last one
    replayed: reading first would lose what is published in between. Sequence numbers are
    consecutive per task, so a gap in the live feed (or an overflow, or a Redis reconnect) is
    seen at once and filled from Postgres. The SSE stream and the WebSocket both consume this.

    Live LLM text (`delta`, never stored, seq 0) is passed on as well: after the history, the
    text so far of each item that is writing some (a `text` event), then only the part of each
    delta past what this client has (by offset); a delta that skips text means some was lost,
    and the text so far is read again from Postgres.
    """
    last = after
    shown: dict[int, tuple[int, int]] = {}  # item -> (step, characters) of live text sent
    first = True
    async with hub.subscribe(task_id) as live:
        while True:
            # the task, a page of its history and its items' text so far: one round trip
            page = await event_store.catch_up(pool, tenant, task_id, last, _PAGE)
            if page is None:
                if first:
                    raise NotFound(f"no task {task_id}")
                return
            backlog = page.events
            end = next((n for n, event in enumerate(backlog, 1) if event.terminal), None)
            batch = backlog[:end]
            if backlog:
                last = backlog[-1].seq
            more = end is None and len(backlog) == _PAGE
            if end is None and not more:
                batch += _texts(task_id, page.streams, shown)
            if page.ended and not backlog:
                return  # its final event was seen already
            if batch or first:
                yield batch
            first = False
            if end is not None:
                return
            if more:
                continue
            resync = False
            while not resync:
                batch = []
                for item in await live.take():
                    if item == RESYNC:
                        resync = True
                        break
                    assert isinstance(item, Event)
                    if item.type == DELTA:
                        piece = _unseen(item.data, shown)
                        if piece is None:
                            resync = True  # text was missed: read the text so far again
                            break
                        if piece:
                            batch.append(Event(task_id, 0, DELTA, piece))
                        continue
                    if item.seq <= last:
                        continue
                    if item.seq > last + 1:
                        resync = True  # a gap: the missing events are committed; read them
                        break
                    batch.append(item)
                    last = item.seq
                    if item.terminal:
                        yield batch
                        return
                if batch:
                    yield batch


def _texts(task_id: str, streams: dict[int, dict[str, Any]],
           shown: dict[int, tuple[int, int]]) -> list[Event]:
    """A `text` event for each item whose text so far the client does not have yet."""
    texts = []
    for index, stream in streams.items():
        if shown.get(index) != (stream["step"], len(stream["text"])):
            shown[index] = (stream["step"], len(stream["text"]))
            texts.append(Event(task_id, 0, TEXT, {"item": index, **stream}))
    return texts


def _unseen(data: dict[str, Any], shown: dict[int, tuple[int, int]]) -> dict[str, Any] | None:
    """What of a live delta the client lacks: {} if it has it all, None if text is missing."""
    index, step, offset, text = data["item"], data["step"], data["offset"], data["text"]
    if data.get("reset"):
        shown[index] = (step, 0)
        return data
    seen_step, have = shown.get(index, (step, 0))
    if seen_step != step:
        have = 0  # the item's next LLM call
    if offset > have:
        return None
    if offset + len(text) <= have:
        return {}
    shown[index] = (step, offset + len(text))
    return {"item": index, "step": step, "offset": have, "text": text[have - offset:]}
