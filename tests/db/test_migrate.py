"""Migrations: idempotent, and safe when two processes run them at once."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from longtask.db.migrate import migrate, migration_files
from tests.conftest import Services


async def test_two_concurrent_migrations_apply_each_file_once(services: Services) -> None:
    name = f"m_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(services.postgres.url)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        url = services.postgres.url.rsplit("/", 1)[0] + f"/{name}"
        first, second = await asyncio.gather(migrate(url), migrate(url))
        expected = [n for n, _ in migration_files()]
        assert sorted([first, second], key=len) == [[], expected]
        assert await migrate(url) == []  # and again: nothing to do
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")
            assert [r["name"] for r in rows] == expected
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
