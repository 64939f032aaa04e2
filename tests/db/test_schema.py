"""db/schema.sql is the schema the migrations build, and no migration rewrites a function."""

from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import Awaitable, Callable
from importlib import resources

import asyncpg
import pytest

from longtask.db.migrate import migrate, migration_files
from longtask.dev.embedded import _pg_bin
from tests.conftest import Services
from tests.support import new_database, with_database

# pg_dump 16.10 and later open and close a dump with `\restrict KEY`, KEY random on each run
_RESTRICT = re.compile(r"^\\(un)?restrict \S+$", re.MULTILINE)
_FUNCTION = re.compile(r"\bCREATE\s+(OR\s+REPLACE\s+)?FUNCTION\s+(\w+)", re.IGNORECASE)


async def test_schema_sql_is_what_the_migrations_build(services: Services) -> None:
    schema = (resources.files("longtask.db") / "schema.sql").read_text(encoding="utf-8")

    async def apply_schema(url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(schema)
        finally:
            await conn.close()

    migrated = await _schema_of(services, migrate)
    written = await _schema_of(services, apply_schema)

    assert "CREATE FUNCTION public.longtask_claim(" in migrated  # the dump holds the schema
    diff = "\n".join(difflib.unified_diff(
        migrated.splitlines(), written.splitlines(), "migrations", "schema.sql", lineterm=""))
    if diff:
        pytest.fail("db/schema.sql is not what the migrations build (pg_dump --schema-only of "
                    f"each):\n{diff}", pytrace=False)


def test_no_migration_replaces_a_function() -> None:
    """A changed function gets a new name (longtask_claim_v2), so the processes of the release
    before, still running during a deploy, keep the one they call."""
    created: dict[str, str] = {}
    for name, sql in migration_files():
        for replace, function in _FUNCTION.findall(sql):
            assert not replace, f"{name}: CREATE OR REPLACE FUNCTION {function}"
            assert function not in created, (
                f"{name} creates {function} again ({created[function]} made it): give the new "
                f"version a new name, such as {function}_v2")
            created[function] = name
    assert {"longtask_forward_only", "longtask_claim", "longtask_finish",
            "longtask_progress"} <= created.keys()


async def _schema_of(services: Services, build: Callable[[str], Awaitable[object]]) -> str:
    """`pg_dump --schema-only` of a new database after `build(url)`, without the migrator's own
    bookkeeping table."""
    async with new_database(services.postgres.url, "schema") as name:
        url = with_database(services.postgres.url, name)
        await build(url)
        proc = await asyncio.create_subprocess_exec(
            str(_pg_bin("pg_dump")), "--schema-only", "--exclude-table=public.schema_migrations",
            "--dbname", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode(errors="replace")
    return _RESTRICT.sub("", out.decode())
