"""api_keys: a key belongs to one tenant and is stored only as its sha256."""

from __future__ import annotations

import hashlib
import secrets

import asyncpg

from longtask.core.models import ApiKey
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


async def list_for(db: Db, tenant: str) -> list[ApiKey]:
    """`tenant`'s keys, revoked ones included, oldest first."""
    rows = await db.fetch(f"SELECT {_COLUMNS} FROM api_keys WHERE tenant = $1"
                          " ORDER BY created_at, id", tenant)
    return [_key(r) for r in rows]


async def revoke(db: Db, key_id: str) -> ApiKey | None:
    """Revoke the key with this very id (no prefix matching: ids are exact); None if there is
    no such key. A key revoked already stays as it was."""
    row = await db.fetchrow(f"UPDATE api_keys SET revoked_at = now() WHERE id = $1"
                            f" AND revoked_at IS NULL RETURNING {_COLUMNS}", key_id)
    if row is None:
        row = await db.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1", key_id)
    return _key(row) if row is not None else None


_COLUMNS = "id::text, tenant, name, prefix, created_at, revoked_at"


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(id=row["id"], tenant=row["tenant"], name=row["name"], prefix=row["prefix"],
                  created_at=row["created_at"], revoked_at=row["revoked_at"])
