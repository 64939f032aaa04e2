"""What a worker tells Redis about its jobs as they start and end, in batches, off the jobs'
path: a job returns at once, and one round trip at a time carries every notice that came while
the one before was on its way. So a busy worker of tiny items makes one call per batch, not per
item, and an idle one tells each notice at once.

- **Claimed**: the job's item is claimed in Postgres; the job moves out of the front of ARQ's
  queue (`queue.hold`), so that the polls of every worker read jobs they can start.
- **Ended**: ARQ has ended a run of the job; its tenant's dispatch slot is freed and the next
  job dispatched (`fair.finished`).

A notice lost (Redis away, the worker killed) costs no correctness: a held job is one ARQ
would skip anyway, and the reconciler's sweep frees a slot nobody freed.
"""

from __future__ import annotations

import asyncio
import logging

from arq import ArqRedis
from redis.exceptions import RedisError

from longtask.broker import fair, queue
from longtask.config import Settings

log = logging.getLogger(__name__)


class Notices:
    """One worker's notices about its jobs, told in batches."""

    def __init__(self, redis: ArqRedis, settings: Settings) -> None:
        self._redis, self._settings = redis, settings
        self._claimed: list[str] = []
        self._ended: list[str] = []
        self._telling: asyncio.Task[None] | None = None

    def claimed(self, job_id: str) -> None:
        self._claimed.append(job_id)
        self._wake()

    def ended(self, job_id: str) -> None:
        if self._settings.fair_dispatch:
            self._ended.append(job_id)
            self._wake()

    async def close(self) -> None:
        """Wait for what has been noticed to be told (the worker is stopping)."""
        if self._telling is not None:
            await self._telling

    def _wake(self) -> None:
        if self._telling is None or self._telling.done():
            self._telling = asyncio.create_task(self._tell())

    async def _tell(self) -> None:
        while self._claimed or self._ended:
            claimed, self._claimed = self._claimed, []
            ended, self._ended = self._ended, []
            try:
                if claimed:
                    await queue.hold(self._redis, self._settings.queue_name, claimed,
                                     self._settings.job_timeout)
                await fair.finished(self._redis, self._settings, ended)  # logs its own outage
            except (RedisError, OSError) as exc:  # held jobs are only skipped by ARQ's polls
                log.warning("%d claimed job(s) not moved back in the queue: %s",
                            len(claimed), exc)
            except Exception:  # a bug, not an outage: the sweep frees the slots
                log.exception("%d job notice(s) not told", len(claimed) + len(ended))
