"""Versioned SQL migrations, applied in file-name order, each once, each in its own transaction.

Two processes may run `migrate` at once (two `release` phases, a dev command and a test): each
migration's transaction takes an advisory lock and checks `schema_migrations` again under it, so
a file is applied once, by whichever process gets there first; the other skips it. The lock is a
transaction's, never the session's, and the connection keeps no prepared statements: `migrate`
runs through a pooler in transaction mode (PgBouncer) as it does on Postgres itself. A session
lock there would be taken on one server connection and released on another, if at all.

A migration is never edited once applied; a change is a new file, and `schema.sql` beside this
module is updated to show the result (tests/db/test_schema.py checks that the two agree).
A function that a later migration changes gets a new versioned name: the migration creates
`longtask_claim_v2` beside `longtask_claim` and the Python switches to it, so the web and worker
processes of the old release, still running during a deploy, keep the function they call; a
later release drops the old one. No migration replaces a function another one created.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
    """Apply what is missing; return the names applied now (by this call, not another's)."""
    # a dozen statements gain nothing from a statement cache, and without one no statement
    # outlives its transaction, so this needs no setting to run through a pooler
    conn = await connect(url, statement_cache=0)
    conn.add_log_listener(_server_warning)
    try:
        async with _locked(conn):
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = await _applied(conn)
        applied = []
        for name, sql in migration_files():
            if name not in done and await _apply(conn, name, sql):
                log.info("applied migration %s", name)
                applied.append(name)
        return applied
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection, name: str, sql: str) -> bool:
    """Apply one migration, unless another process did since we looked."""
    async with _locked(conn):
        if name in await _applied(conn):
            return False
        await conn.execute(sql)
        await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
    return True


@asynccontextmanager
async def _locked(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction holding the migrations' lock (a second `migrate` waits here)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        yield


async def _applied(conn: asyncpg.Connection) -> set[str]:
    return {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}


def _server_warning(conn: object, message: asyncpg.PostgresLogMessage) -> None:
    """A migration's RAISE WARNING, which asyncpg would drop (notices stay dropped: "already
    exists, skipping" and the like)."""
    if message.severity_en == "WARNING":
        log.warning("%s", message.message)
