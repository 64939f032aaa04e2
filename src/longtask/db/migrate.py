"""Versioned SQL migrations, applied in file-name order, each once, each in its own transaction.

Two processes may run `migrate` at once (two `release` phases, a dev command and a test): an
advisory lock makes the second wait, and then it finds nothing left to do.

A migration is never edited once applied; a change is a new file, and `schema.sql` beside this
module is updated to show the result (tests/db/test_schema.py checks that the two agree).
A function that a later migration changes gets a new versioned name: the migration creates
`longtask_claim_v2` beside `longtask_claim` and the Python switches to it, so the web and worker
processes of the old release, still running during a deploy, keep the function they call; a
later release drops the old one. No migration replaces a function another one created.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

from longtask.db import connect

log = logging.getLogger(__name__)

_LOCK_KEY = 0x6C6F6E677461736B  # "longtask"


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("longtask.db") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name, (folder / name).read_text(encoding="utf-8")) for name in names]


async def migrate(url: str) -> list[str]:
    """Apply what is missing; return the names applied now."""
    conn = await connect(url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            return await _apply(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection) -> list[str]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
    applied = []
    for name, sql in migration_files():
        if name in done:
            continue
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        log.info("applied migration %s", name)
        applied.append(name)
    return applied
