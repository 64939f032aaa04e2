"""longtask_meta: values shared by every process through Postgres."""

from __future__ import annotations

import secrets

import asyncpg


async def shared_secret(pool: asyncpg.Pool) -> str:
    """The secret that signs stream tokens: made once, then the same for every process."""
    await pool.execute(
        "INSERT INTO longtask_meta (key, value) VALUES ('secret', $1) ON CONFLICT DO NOTHING",
        secrets.token_urlsafe(32),
    )
    return str(await pool.fetchval("SELECT value FROM longtask_meta WHERE key = 'secret'"))
