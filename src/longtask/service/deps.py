"""What the use cases run against: built once per process (the web's lifespan, the worker's
start-up) and handed to every service function."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from arq import ArqRedis

from longtask.broker.admission import Admission
from longtask.broker.outbox import Outbox
from longtask.config import Settings


@dataclass(frozen=True)
class Deps:
    settings: Settings
    pool: asyncpg.Pool
    redis: ArqRedis  # ARQ's pool, also a plain redis.asyncio client
    outbox: Outbox  # committed events, on their way to Redis pub/sub
    admission: Admission | None = None  # backpressure: the web's door, the scheduler's firings

    @classmethod
    def open(cls, settings: Settings, pool: asyncpg.Pool, redis: ArqRedis, *,
             admission: Admission | None = None) -> Deps:
        return cls(settings, pool, redis, Outbox(redis), admission)

    async def close(self) -> None:
        """Send what is still in the outbox (a few seconds at most); the pool and Redis are the
        caller's to close."""
        await self.outbox.flush()
