"""Migrations: idempotent, safe when two processes run them at once, and what they set on the role."""

from __future__ import annotations

import asyncio

import asyncpg

from longtask.db import create_pool
from longtask.db.migrate import migrate, migration_files
from tests.conftest import Services
from tests.support import new_database, with_database


async def assert_two_migrations_at_once_apply_each_file_once(url: str) -> None:
    """Two `migrate` runs at once on the empty database at `url`: each file is applied by one
    of them (whichever got there first; a second run of a file would fail on its CREATEs or on
    schema_migrations' key), and a third finds nothing to do."""
    first, second = await asyncio.gather(migrate(url), migrate(url))
    expected = [n for n, _ in migration_files()]
    assert sorted(first + second) == expected
    assert await migrate(url) == []
    conn = await asyncpg.connect(url, statement_cache_size=0)
    try:
        rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY applied_at, name")
        assert [r["name"] for r in rows] == expected  # applied in file-name order
    finally:
        await conn.close()


async def test_two_concurrent_migrations_apply_each_file_once(services: Services) -> None:
    async with new_database(services.postgres.url, "m") as name:
        await assert_two_migrations_at_once_apply_each_file_once(
            with_database(services.postgres.url, name))


async def test_the_pools_sessions_get_the_idle_transaction_timeout_from_the_role(
        services: Services) -> None:
    """Set on the role in the database by a migration, not sent by the pool (a pooler refuses
    a connection over a startup parameter it does not know)."""
    async with new_database(services.postgres.url, "m") as name:
        url = with_database(services.postgres.url, name)
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            assert await pool.fetchval("SHOW idle_in_transaction_session_timeout") == "0"
        finally:
            await pool.close()
        await migrate(url)
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            assert await pool.fetchval("SHOW idle_in_transaction_session_timeout") == "10s"
        finally:
            await pool.close()
