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


@dataclass(frozen=True)
class StoredFile:
    id: str | None  # None when the file was over the size limit and not kept
    sha256: str
    size: int
    head: bytes


async def write(pool: asyncpg.Pool, tenant: str, read: Read, max_bytes: int) -> StoredFile:
    """Copy a stream into Postgres; the same bytes uploaded before are kept once."""
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
                return StoredFile(None, "", size, head)
            await pool.execute("INSERT INTO file_parts (file_id, n, data) VALUES ($1, $2, $3)",
                               file_id, n, part)
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
