"""Group commit: writes that arrive while a commit is in flight share the next one.

Why: on a durable disk each commit waits for its WAL flush (fsync). Submits that each commit
alone queue on that flush, a pool's worth at a time: at 50 concurrent clients most backends
waited on `WALWrite` / `WALSync` and a submit took seconds at p99 (bench.submit). Here the
first write goes at once, in a transaction of its own; the ones that arrive meanwhile wait for
the next free turn and then go together, in one transaction and one flush. Each caller is
answered only after the commit that holds its rows: "202 means stored" still holds, with
synchronous_commit on.

    caller --run(work)--> waiting ... --(a turn is free)--> BEGIN; work(conn) for each; COMMIT
                                                               |  each caller: its own result
                                                               |  or its own exception
                                                               v
                          the transaction failed (a statement, the commit): each work again,
                          alone, on the pool; one bad write fails only its own caller

A work takes the connection and must write nothing unless it returns: a domain error it raises
(the tenant is out of room, an Idempotency-Key conflict) goes to its caller, and the others'
rows commit. A database error aborts the shared transaction, so each work then runs again
alone, as if there had been no batch: a work does nothing outside its transaction. Several transactions may be in flight at once (`turns`): one fills
while another waits for its flush. Nothing here holds session state between transactions, so
it works behind PgBouncer in transaction mode.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import asyncpg

from longtask.db import Db

log = logging.getLogger(__name__)

T = TypeVar("T")
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


class _Waiting(Generic[T]):
    __slots__ = ("work", "future")

    def __init__(self, work: Callable[[Db], Awaitable[T]], future: asyncio.Future[T]) -> None:
        self.work, self.future = work, future


class GroupCommit:
    """One per process, on its pool: `await commits.run(work)` runs `work(conn)` in a
    transaction shared with the writes that arrived while the last one was in flight."""

    def __init__(self, pool: asyncpg.Pool, *, turns: int = 5, most: int = 10) -> None:
        self._pool = pool
        self._turns = turns  # transactions in flight at once
        self._most = most  # writes in one transaction
        self._waiting: list[_Waiting[Any]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, work: Callable[[Db], Awaitable[T]]) -> T:
        """`work(conn)`'s result (or exception) once the transaction it ran in has committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(work, future))
        if len(self._running) < self._turns:
            self._start()
        return await future

    async def close(self) -> None:
        """Wait for the transactions in flight (their callers are owed an answer)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _start(self) -> None:
        batch, self._waiting = self._waiting[:self._most], self._waiting[self._most:]
        task = asyncio.create_task(self._commit(batch))
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._waiting and len(self._running) < self._turns:
            self._start()

    async def _commit(self, batch: list[_Waiting[Any]]) -> None:
        if len(batch) == 1:
            await _alone(self._pool, batch[0])
            return
        outcomes: list[tuple[bool, Any]] = []
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                for waiting in batch:
                    try:
                        outcomes.append((True, await waiting.work(conn)))
                    except _DATABASE_ERRORS:
                        raise
                    except Exception as exc:  # the caller's own answer (a domain error)
                        outcomes.append((False, exc))
                if not all(ok for ok, _ in outcomes):
                    # a work that swallowed a database error left the transaction aborted, and
                    # COMMIT would then roll back without a word: this fails instead
                    await conn.execute("SELECT 1")
        except _DATABASE_ERRORS as exc:
            log.warning("a shared commit of %d writes failed (%s); each goes alone",
                        len(batch), exc)
            await asyncio.gather(*(_alone(self._pool, waiting) for waiting in batch))
            return
        except BaseException as exc:  # cancelled: nobody is left waiting unanswered
            for waiting in batch:
                _answer(waiting.future, False, exc)
            raise
        for waiting, (ok, value) in zip(batch, outcomes, strict=True):
            _answer(waiting.future, ok, value)


async def _alone(pool: asyncpg.Pool, waiting: _Waiting[Any]) -> None:
    """One write on its own, as without a batch."""
    try:
        value = await waiting.work(pool)
    except BaseException as exc:
        _answer(waiting.future, False, exc)
        if not isinstance(exc, Exception):
            raise
        return
    _answer(waiting.future, True, value)


def _answer(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # its caller has gone (cancelled); what it wrote stays written
        return
    if ok:
        future.set_result(value)
    elif isinstance(value, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(value)
