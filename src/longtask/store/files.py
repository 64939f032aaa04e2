"""files: uploads in Postgres, content-addressed by sha256 per tenant, in 1 MiB parts.

Nobody holds a whole file: the web process writes it part by part as it reads the upload, and a
worker on any machine reads it back part by part into its own scratch file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

PART_BYTES = 1024 * 1024
HEAD_BYTES = 1024

Read = Callable[[int], Awaitable[bytes]]


TOO_LARGE = "too_large"  # the file is over the size limit of one file
QUOTA_EXCEEDED = "quota_exceeded"  # the tenant's files would pass its storage quota

# One part stored, and counted against the tenant's quota, only if it fits ($5): one statement,
# so uploads running at once cannot both pass the quota. No row counted means it did not fit.
_PART = """
WITH grow AS (
    INSERT INTO tenant_storage AS s (tenant, bytes) SELECT $1, $4::bigint WHERE $4 <= $5::bigint
    ON CONFLICT (tenant) DO UPDATE SET bytes = s.bytes + EXCLUDED.bytes
        WHERE s.bytes + EXCLUDED.bytes <= $5::bigint
    RETURNING 1
), part AS (
    INSERT INTO file_parts (file_id, n, data) SELECT $2, $3, $6 FROM grow
), sized AS (
    UPDATE files SET size = size + $4 WHERE id = $2 AND EXISTS (SELECT 1 FROM grow)
)
SELECT count(*) FROM grow
"""


@dataclass(frozen=True)
class StoredFile:
    id: str | None  # None when the file was not kept: `refused` says why
    sha256: str
    size: int
    head: bytes
    refused: str | None = None  # TOO_LARGE or QUOTA_EXCEEDED


async def write(pool: asyncpg.Pool, tenant: str, read: Read, max_bytes: int,
                quota: int) -> StoredFile:
    """Copy a stream into Postgres; the same bytes uploaded before are kept once. Not kept if
    it is over `max_bytes`, or if the tenant's files would pass `quota` bytes with it (its
    bytes count while it is stored, a duplicate's too, until it is found to be one)."""
    digest = hashlib.sha256()
    size, head, n = 0, b"", 0
    file_id = str(await pool.fetchval("INSERT INTO files (tenant) VALUES ($1) RETURNING id",
                                      tenant))
    try:
        while part := await read(PART_BYTES):
            digest.update(part)
            size += len(part)
            if len(head) < HEAD_BYTES:
                head = (head + part)[:HEAD_BYTES]
            if size > max_bytes:
                while more := await read(PART_BYTES):  # read on, keep nothing
                    size += len(more)
                await _discard(pool, file_id)
                return StoredFile(None, "", size, head, TOO_LARGE)
            if not await pool.fetchval(_PART, tenant, file_id, n, len(part), quota, part):
                await _discard(pool, file_id)
                return StoredFile(None, "", size, head, QUOTA_EXCEEDED)
            n += 1
        sha = digest.hexdigest()
        try:
            await pool.execute("UPDATE files SET sha256 = $2, size = $3, head = $4 WHERE id = $1",
                               file_id, sha, size, head)
        except asyncpg.UniqueViolationError:
            await _discard(pool, file_id)
            file_id = str(await pool.fetchval(
                "SELECT id FROM files WHERE tenant = $1 AND sha256 = $2", tenant, sha))
        return StoredFile(file_id, sha, size, head)
    except BaseException:
        await _discard(pool, file_id)
        raise


async def copy_to(pool: asyncpg.Pool, tenant: str, file_id: str, path: Path) -> int:
    """Write a stored file to a local scratch path, part by part; returns its size."""
    size = 0
    with path.open("wb") as out:
        n = 0
        while True:
            data = await pool.fetchval(
                "SELECT p.data FROM file_parts p JOIN files f ON f.id = p.file_id"
                " WHERE p.file_id = $1 AND f.tenant = $2 AND p.n = $3",
                file_id, tenant, n,
            )
            if data is None:
                return size
            out.write(data)
            size += len(data)
            n += 1


async def stored_bytes(pool: asyncpg.Pool, tenant: str) -> int:
    """The bytes of the tenant's files, as counted against its quota."""
    stored = await pool.fetchval("SELECT bytes FROM tenant_storage WHERE tenant = $1", tenant)
    return int(stored or 0)


async def head(pool: asyncpg.Pool, tenant: str, file_id: str) -> bytes | None:
    head: bytes | None = await pool.fetchval(
        "SELECT head FROM files WHERE id = $1 AND tenant = $2", file_id, tenant)
    return head


async def purge_orphans(pool: asyncpg.Pool, older_than_hours: float = 24.0) -> int:
    """Files no document refers to (a failed upload, a deleted document)."""
    return int(await pool.fetchval(
        "WITH d AS (DELETE FROM files f WHERE f.created_at < now() - make_interval(secs => $1)"
        " AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.file_id = f.id)"
        " RETURNING 1) SELECT count(*) FROM d",
        older_than_hours * 3600,
    ))


async def _discard(pool: asyncpg.Pool, file_id: str) -> None:
    await pool.execute("DELETE FROM files WHERE id = $1", file_id)
