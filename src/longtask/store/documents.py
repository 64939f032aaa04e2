"""documents, their pages and chunks; vector search."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import asyncpg

from longtask.core.errors import NotFound
from longtask.db import Db

_MAX_DIM = 16000
# how long a new model's CREATE INDEX may wait for chunks' writers; they queue behind it meanwhile
_INDEX_LOCK_TIMEOUT = "1s"


@dataclass(frozen=True)
class Document:
    id: str
    filename: str
    sha256: str
    size: int
    metadata: dict[str, Any]
    status: str
    error: dict[str, Any] | None
    title: str | None
    pages: int | None
    chunk_count: int
    summary: dict[str, Any] | None
    embedding_model: str | None
    embedding_dim: int | None
    generation: str | None
    task_id: str | None
    created_at: datetime
    indexed_at: datetime | None
    language: str  # its text-search configuration (`simple`: no stemming)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "generation"}
        for key in ("created_at", "indexed_at"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


@dataclass(frozen=True)
class ChunkRow:
    idx: int
    page_start: int
    page_end: int
    text: str
    tokens: int
    embedding: list[float]


_COLUMNS = ", ".join(f"{f.name}::text AS {f.name}" if f.name == "language" else f.name
                     for f in fields(Document))
# a document's words decide its language when at least this share of them are the language's
# stop words ("the", "of", "und", "der" ...); English text runs at 40 to 50 %
_STOP_WORD_SHARE = 0.15
_LANGUAGE_SAMPLE_CHARS = 2000


async def upsert(pool: asyncpg.Pool, tenant: str, *, sha256: str, file_id: str, filename: str,
                 size: int, metadata: dict[str, Any], max_metadata: int) -> str | None:
    """The document for these bytes: made now, or the one made by an earlier upload, with
    `metadata` merged into its own (keys given now win). None, and nothing changed, if the
    merged metadata would pass `max_metadata` bytes (as JSON text) and be larger than before."""
    document_id = await pool.fetchval(
        "INSERT INTO documents (tenant, sha256, file_id, filename, size, metadata)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, sha256) DO UPDATE"
        " SET file_id = EXCLUDED.file_id, metadata = documents.metadata || EXCLUDED.metadata,"
        " updated_at = now()"
        " WHERE octet_length((documents.metadata || EXCLUDED.metadata)::text)"
        " <= greatest($7, octet_length(documents.metadata::text)) RETURNING id",
        tenant, sha256, file_id, filename, size, metadata, max_metadata,
    )
    return None if document_id is None else str(document_id)


async def get(pool: asyncpg.Pool, tenant: str, document_id: str) -> Document:
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM documents WHERE id = $1 AND tenant = $2",
                              document_id, tenant)
    if row is None:
        raise NotFound(f"no document {document_id}")
    return _document(row)


async def list_page(pool: asyncpg.Pool, tenant: str, limit: int,
                    before: tuple[datetime, str] | None) -> list[Document]:
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM documents WHERE tenant = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))"
        " ORDER BY created_at DESC, id DESC LIMIT $4",
        tenant, before[0] if before else None, before[1] if before else None, limit,
    )
    return [_document(r) for r in rows]


async def delete(pool: asyncpg.Pool, tenant: str, document_id: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        file_id = await conn.fetchval(
            "DELETE FROM documents WHERE id = $1 AND tenant = $2 RETURNING coalesce(file_id::text, '')",
            document_id, tenant)
        if file_id is None:
            raise NotFound(f"no document {document_id}")
        if file_id:
            await conn.execute("DELETE FROM files WHERE id = $1 AND NOT EXISTS"
                               " (SELECT 1 FROM documents WHERE file_id = $1)", file_id)


async def save_pages(pool: asyncpg.Pool, document_id: str, first: int, texts: list[str]) -> None:
    """Store page texts from page `first` on; storing them again replaces them."""
    await pool.execute(
        "INSERT INTO document_pages (document_id, page, text)"
        " SELECT $1, $2 + n - 1, t FROM unnest($3::text[]) WITH ORDINALITY AS u(t, n)"
        " ON CONFLICT (document_id, page) DO UPDATE SET text = EXCLUDED.text",
        document_id, first, [t.replace("\x00", "") for t in texts],
    )


async def pages(pool: asyncpg.Pool, tenant: str, document_id: str, first: int = 1,
                last: int | None = None) -> list[str]:
    rows = await pool.fetch(
        "SELECT p.text FROM document_pages p JOIN documents d ON d.id = p.document_id"
        " WHERE p.document_id = $1 AND d.tenant = $2 AND p.page >= $3"
        " AND ($4::int IS NULL OR p.page <= $4) ORDER BY p.page",
        document_id, tenant, first, last,
    )
    return [r["text"] for r in rows]


async def chunks(pool: asyncpg.Pool, tenant: str, document_id: str) -> list[dict[str, Any]]:
    """The chunks search sees for a document (its current generation), in order."""
    rows = await pool.fetch(
        "SELECT c.idx, c.page_start, c.page_end, c.tokens, c.text FROM chunks c"
        " JOIN documents d ON d.id = c.document_id AND d.generation = c.generation"
        " WHERE c.document_id = $1 AND d.tenant = $2 ORDER BY c.idx", document_id, tenant)
    return [dict(r) for r in rows]


async def language_of(pool: asyncpg.Pool, text: str) -> str:
    """The text-search configuration for a text: the one of Postgres' own (snowball) whose stop
    words the text uses most, if it uses them enough; `simple` (no stemming, no stop words) for
    a language without one (Japanese, Chinese ...) or text that is mostly numbers."""
    language = await pool.fetchval(_LANGUAGE, text[:_LANGUAGE_SAMPLE_CHARS], _STOP_WORD_SHARE)
    return str(language or "simple")


# a stop word is a token that a configuration's dictionaries turn into no lexeme at all
_LANGUAGE = """
WITH words AS (
    SELECT count(*) AS n FROM ts_debug('simple', $1) WHERE lexemes IS NOT NULL
)
SELECT c.cfgname FROM pg_ts_config c, words
CROSS JOIN LATERAL (SELECT count(*) AS n FROM ts_debug(c.oid::regconfig, $1)
                    WHERE lexemes = '{}') stops
WHERE c.cfgnamespace = 'pg_catalog'::regnamespace AND c.cfgname <> 'simple'
  AND stops.n >= $2 * words.n AND stops.n > 0
ORDER BY stops.n DESC, c.cfgname LIMIT 1
"""


async def save_chunks(pool: asyncpg.Pool, tenant: str, document_id: str, generation: str,
                      model: str, rows: list[ChunkRow], language: str = "simple") -> None:
    """Store a batch of a generation's chunks; a batch stored twice is stored once."""
    # One statement over arrays, not executemany: that streams its rows in buffers of 32 KB,
    # in a transaction that stays open until the last one is sent, so a worker that froze in
    # between held the rows it had inserted, and the run that took the item over (the same
    # generation, the same keys) waited on them to insert its own.
    await pool.execute(
        "INSERT INTO chunks (document_id, tenant, generation, idx, page_start, page_end, text,"
        " tokens, model, embedding, language, tsv)"
        " SELECT $1::uuid, $2::text, $3::uuid, u.idx, u.page_start, u.page_end, u.text,"
        " u.tokens, $4::text, u.embedding::vector, $11::text::regconfig,"
        " to_tsvector($11::text::regconfig, u.text)"
        " FROM unnest($5::int[], $6::int[], $7::int[], $8::text[], $9::int[], $10::text[])"
        " AS u(idx, page_start, page_end, text, tokens, embedding)"
        " ON CONFLICT (document_id, generation, idx) DO NOTHING",
        document_id, tenant, generation, model, [r.idx for r in rows],
        [r.page_start for r in rows], [r.page_end for r in rows],
        [r.text.replace("\x00", "") for r in rows], [r.tokens for r in rows],
        [vector_literal(r.embedding) for r in rows], language,
    )


async def chunks_stored(pool: asyncpg.Pool, document_id: str, generation: str) -> int:
    return int(await pool.fetchval(
        "SELECT count(*) FROM chunks WHERE document_id = $1 AND generation = $2",
        document_id, generation))


async def publish(pool: asyncpg.Pool, document_id: str, generation: str, *, title: str,
                  pages: int, summary: dict[str, Any], model: str, dim: int, task_id: str,
                  item_id: str, owner: str, language: str = "simple") -> int | None:
    """Make a generation the one search sees and drop the others, at once, if the item's lease
    is still `owner`'s; None if it is not (a late run writes nothing)."""
    count = await pool.fetchval(_PUBLISH, document_id, generation, title, pages, summary, model,
                                dim, task_id, item_id, owner, language)
    return None if count is None else int(count)


# One statement, not a transaction of three. In a transaction, a worker that froze between two
# statements kept the document's row locked (for up to idle_in_transaction_session_timeout, and
# with no limit when it froze between asyncpg's prepare and bind of the next one), and the run
# that took the item over waited on it, then failed at command_timeout. One statement runs and
# commits on the server once sent, whatever becomes of the client.
_PUBLISH = """
WITH stored AS (
    SELECT count(*) AS chunks FROM chunks WHERE document_id = $1 AND generation = $2
), published AS (
    UPDATE documents SET status = 'indexed', error = NULL, generation = $2, title = $3,
        pages = $4, summary = $5, embedding_model = $6, embedding_dim = $7,
        chunk_count = (SELECT chunks FROM stored), task_id = $8, indexed_at = now(),
        updated_at = now(), language = $11::text::regconfig
    WHERE id = $1 AND EXISTS (SELECT 1 FROM task_items WHERE id = $9 AND lease_owner = $10
                              AND status = 'running')
    RETURNING chunk_count
), dropped AS (
    DELETE FROM chunks WHERE document_id = $1 AND generation <> $2
    AND EXISTS (SELECT 1 FROM published)
)
SELECT chunk_count FROM published
"""


async def fail(pool: asyncpg.Pool, document_id: str, error: dict[str, Any], task_id: str) -> None:
    """Record why indexing failed; a document indexed before stays searchable as it was."""
    await pool.execute(
        "UPDATE documents SET error = $2, task_id = $3, updated_at = now(),"
        " status = CASE WHEN generation IS NULL THEN 'failed' ELSE status END WHERE id = $1",
        document_id, error, task_id)


async def drop_generation(pool: asyncpg.Pool, document_id: str, generation: str) -> None:
    """Remove an unfinished generation's chunks (a canceled or failed run)."""
    await pool.execute(
        "DELETE FROM chunks c USING documents d WHERE c.document_id = $1 AND c.generation = $2"
        " AND d.id = c.document_id AND d.generation IS DISTINCT FROM $2", document_id, generation)


async def ensure_vector_index(db: Db, model: str, dim: int) -> bool:
    """An HNSW index for one embedding model (the migration made the local model's). False if
    it is not there yet and could not be made now (another session is making it, or writers
    hold the table): search works without it, only slower; ask again later."""
    if not 0 < dim <= _MAX_DIM:
        raise ValueError(f"embedding dimension {dim} is out of range")
    name = vector_index_name(model, dim)
    # Looked up by name first, which locks nothing. CREATE INDEX takes a SHARE lock on chunks,
    # IF NOT EXISTS before it finds the index made. That lock waits for every transaction that
    # writes chunks, a frozen worker's too (one stopped between asyncpg's prepare and its bind
    # leaves its backend waiting for the rest of the statement, holding the table's lock, and no
    # idle timeout ends that), and every chunk write of every worker queues behind the waiting
    # CREATE INDEX: each worker's first embedding stalled the fleet until command_timeout.
    if await db.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
        return True
    # A new model: made by one session of all, without waiting on anyone. One statement in one
    # message (the simple protocol), so it runs and commits without another word from us: a
    # process that freezes after sending it holds nothing. The advisory lock is IF NOT EXISTS'
    # missing half (it does not hold against itself: the second of two fails on pg_class's
    # unique name); whoever finds it taken leaves the index to its holder.
    make = (f"BEGIN IF pg_try_advisory_xact_lock(hashtext({sql_literal(name)})) THEN"
            f" SET LOCAL lock_timeout = {sql_literal(_INDEX_LOCK_TIMEOUT)};"
            f" CREATE INDEX IF NOT EXISTS {name} ON chunks USING hnsw"
            f" ((embedding::vector({dim})) vector_cosine_ops) WHERE model = {sql_literal(model)};"
            " END IF; END")
    try:
        await db.execute(f"DO {sql_literal(make)}")
    except asyncpg.LockNotAvailableError:
        return False  # writers hold chunks (one may be frozen): not worth stalling them for
    return bool(await db.fetchval("SELECT to_regclass($1) IS NOT NULL", name))


def vector_index_name(model: str, dim: int) -> str:
    """The name of a model's HNSW index (the local model's: migration 0015's)."""
    return "chunks_hnsw_" + uuid.uuid5(uuid.NAMESPACE_URL, f"{model}:{dim}").hex[:12]


def sql_literal(text: str) -> str:
    """A string constant in SQL, for the few statements that cannot take parameters (a DO
    block, CREATE INDEX); standard_conforming_strings is on, so only quotes need doubling."""
    return "'" + text.replace("'", "''") + "'"


def vector_literal(values: list[float]) -> str:
    # bound as text and cast in SQL ($1::text::vector): a parameter of pgvector's own type sends
    # asyncpg to look the type up, with a session-level SET of `jit` around the lookup, which a
    # transaction pooler leaves on whichever server connection ran it
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def _document(row: asyncpg.Record) -> Document:
    values = {f.name: row[f.name] for f in fields(Document)}
    for key in ("id", "generation", "task_id"):
        values[key] = str(values[key]) if values[key] is not None else None
    return Document(**values)
