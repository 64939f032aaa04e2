"""api_keys: a key belongs to one tenant and is stored only as its sha256."""

from __future__ import annotations

import hashlib
import secrets

import asyncpg

from longtask.db import Db

KEY_PREFIX = "lt_"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


async def create(pool: Db, tenant: str, name: str = "") -> str:
    """Make a key for `tenant`; the only time the key itself is seen."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    await pool.execute(
        "INSERT INTO api_keys (tenant, name, key_hash, prefix) VALUES ($1, $2, $3, $4)",
        tenant, name, hash_key(key), key[:10],
    )
    return key


async def tenant_for(pool: asyncpg.Pool, key: str) -> str | None:
    """The tenant of a live key. The lookup is by hash, so timing tells nothing of the key."""
    tenant: str | None = await pool.fetchval(
        "SELECT tenant FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", hash_key(key)
    )
    return tenant


async def revoke(pool: asyncpg.Pool, prefix: str) -> int:
    done = await pool.fetchval(
        "WITH r AS (UPDATE api_keys SET revoked_at = now() WHERE prefix = $1"
        " AND revoked_at IS NULL RETURNING 1) SELECT count(*) FROM r", prefix,
    )
    return int(done)
