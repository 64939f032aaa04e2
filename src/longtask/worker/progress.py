"""A worker's progress reports on their way to Postgres, written together.

One task writes them: whatever reports queued up while the last write was in flight go in the
next call, so hundreds of items reporting at once cost one round trip and one commit instead of
one each. A report's caller still waits until its event is stored (and gets it back), as with a
write of its own: an event is in Postgres before it is published, and the caller learns when its
lease was lost.
"""

from __future__ import annotations

import asyncio
from collections import deque

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from longtask.broker.outbox import Outbox
from longtask.core.events import Event
from longtask.core.models import Report
from longtask.store import items as item_store


class ProgressWriter:
    def __init__(self, pool: asyncpg.Pool, outbox: Outbox, batch: int = 200) -> None:
        self._pool = pool
        self._outbox = outbox
        self._batch = batch
        self._pending: deque[tuple[Report, asyncio.Future[Event | None]]] = deque()
        self._task: asyncio.Task[None] | None = None

    async def write(self, report: Report) -> Event | None:
        """Store the report's event and send it on; None if the lease is no longer ours."""
        done: asyncio.Future[Event | None] = asyncio.get_running_loop().create_future()
        self._pending.append((report, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="progress-writer")
        return await done

    async def _run(self) -> None:
        while self._pending:
            batch = [self._pending.popleft()
                     for _ in range(min(self._batch, len(self._pending)))]
            batch.sort(key=lambda pair: pair[0].task_id)  # tasks locked in one order
            try:
                events = await self._store([report for report, _ in batch])
            except asyncio.CancelledError:
                for _, done in batch:
                    done.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - every waiting caller gets it, as its own
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self._outbox.send([event for event in events if event is not None])
            for (_, done), event in zip(batch, events, strict=True):
                if not done.done():
                    done.set_result(event)

    async def _store(self, reports: list[Report]) -> list[Event | None]:
        # Postgres breaks a lock cycle by aborting one transaction, and nothing of it is written:
        # a batch locks each task before its item, and a transaction that locks an item before
        # its task (the reaper taking back an item whose late owner still reports, a finish) can
        # close a cycle with it. Rare, and the batch is simply written again.
        async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(asyncpg.DeadlockDetectedError),
                stop=stop_after_attempt(3), reraise=True):
            with attempt:
                return await item_store.progress(self._pool, reports)
        raise AssertionError("unreachable: the last attempt returns or raises")
