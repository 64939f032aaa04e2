"""What the use cases run against: built once per process (the web's lifespan, the worker's
start-up) and handed to every service function."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from arq import ArqRedis

from longtask.broker.admission import Admission
from longtask.broker.outbox import Outbox
from longtask.config import Settings
from longtask.db.group import GroupCommit


@dataclass(frozen=True)
class Deps:
    settings: Settings
    pool: asyncpg.Pool
    redis: ArqRedis  # ARQ's pool, also a plain redis.asyncio client
    outbox: Outbox  # committed events, on their way to Redis pub/sub
    admission: Admission | None = None  # backpressure: the web's door, the scheduler's firings
    commits: GroupCommit = field(init=False)  # submits share commits (db.group)

    def __post_init__(self) -> None:
        object.__setattr__(self, "commits",
                           GroupCommit(self.pool, most=self.settings.submit_batch,
                                       turns=max(1, self.settings.db_pool_max // 2)))

    @classmethod
    def open(cls, settings: Settings, pool: asyncpg.Pool, redis: ArqRedis, *,
             admission: Admission | None = None) -> Deps:
        return cls(settings, pool, redis, Outbox(redis), admission)

    async def close(self) -> None:
        """Answer the submits whose commit is in flight, send what is still in the outbox (a
        few seconds at most); the pool and Redis are the caller's to close."""
        await self.commits.close()
        await self.outbox.flush()
