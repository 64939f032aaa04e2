"""Which exceptions mean "a backing service is away", not "this request or item is bad".

The web process answers them as Unavailable; a worker hands the item back to run again, instead of
failing it for something that was not its fault.
"""

from __future__ import annotations

import asyncio

import asyncpg
from redis.exceptions import RedisError

DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    RedisError,
    asyncpg.PostgresConnectionError,  # CannotConnectNowError among them
    asyncpg.InterfaceError,  # the connection closed under us
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown
)
