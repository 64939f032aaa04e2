"""The asyncpg pool: JSON in and out of jsonb, and a helpful error for a bad URL.

Everything here works through a pooler in transaction mode (PgBouncer, `pool_mode =
transaction`), where each transaction, and each statement outside one, may run on another server
connection: nothing we do relies on the session. No startup parameter but those PgBouncer keeps
for each client (it refuses the connection over any other), no SET, no session advisory lock, no
LISTEN, no cursor outside a transaction. Prepared statements belong to a session:
`statement_cache=0` (LONGTASK_DB_STATEMENT_CACHE) makes asyncpg use unnamed ones, parsed again
with each execution. Session settings we want are the role's, in the database (migration 0011)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from longtask.core.errors import ConfigError

Pool = asyncpg.Pool
Conn = asyncpg.Connection | PoolConnectionProxy  # a connection of its own, or one the pool lent
Db = asyncpg.Pool | Conn  # where a store function runs its statements

STATEMENT_CACHE = 100  # asyncpg's default
# asyncpg's startup message says client_encoding='utf-8', quotes included; the server reports
# UTF8, and PgBouncer, seeing the two differ, sends a `SET client_encoding` ahead of each
# transaction (the server reports UTF8 again after it): one more round trip every time. The same
# parameter again, spelled as the server reports it, is the one kept (the last one counts).
_SERVER_SETTINGS = {"client_encoding": "UTF8"}


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10,
                      statement_cache: int = STATEMENT_CACHE) -> asyncpg.Pool:
    """A pool on `url`; `statement_cache=0` behind a pooler in transaction mode."""
    if not url.startswith(("postgres://", "postgresql://")):
        raise ConfigError("DATABASE_URL must start with postgres:// or postgresql://")
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=60,
        statement_cache_size=statement_cache, server_settings=_SERVER_SETTINGS,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def transaction(db: Db) -> AsyncIterator[Conn]:
    """A transaction on a connection from `db`, or, when `db` is a connection already, a
    savepoint inside the caller's transaction (whose failure rolls back only this part)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db


async def connect(url: str, *, statement_cache: int = STATEMENT_CACHE) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, statement_cache_size=statement_cache,
                                 server_settings=_SERVER_SETTINGS)
    await _init_connection(conn)
    return conn


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool: nothing. asyncpg's default reset
    (UNLISTEN, CLOSE ALL, RESET ALL, advisory unlock) is one more round trip per query, and we
    leave no session state behind (advisory locks are per transaction, no LISTEN, no SET);
    asyncpg still rolls back a transaction left open, before this is called."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=_dumps, decoder=json.loads, schema="pg_catalog")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def returned(row: asyncpg.Record | None) -> asyncpg.Record:
    """The row of a statement that always returns one (an INSERT ... RETURNING, a SELECT over a
    CTE): None here is a bug, not a missing row."""
    if row is None:
        raise RuntimeError("a statement that returns a row returned none")
    return row
