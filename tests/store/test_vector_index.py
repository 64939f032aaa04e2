"""The vector index of an embedding model is made once, however many items ask at once, and
asking for it never makes anyone wait on a stranger."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from longtask.pipeline.embed import LOCAL_DIM, LOCAL_MODEL
from longtask.store import documents
from tests.pgwire import StoppedClient


async def test_a_second_item_asking_for_a_new_models_index_does_not_wait_for_the_first(
        pool: asyncpg.Pool) -> None:
    # the first batch embedded with a model new to the database: each item asks for the model's
    # index as it stores its first chunks. CREATE INDEX IF NOT EXISTS alone let the second find
    # no index while the first was still making it, and fail with a unique violation on
    # pg_class once the first committed (seen in a full run as an item's internal_error)
    model = f"test-model-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as first:
        async with first.transaction():
            assert await documents.ensure_vector_index(first, model, 8)  # made, not committed
            # the second leaves it to the first at once: no wait, no error, not made yet
            async with asyncio.timeout(5):
                assert not await documents.ensure_vector_index(pool, model, 8)
    assert await documents.ensure_vector_index(pool, model, 8)  # the first committed it
    assert len(await _indexes(pool, model)) == 1
    await _drop(pool, model)


async def test_a_frozen_chunk_writer_stalls_neither_the_index_nor_the_other_writers(
        pool: asyncpg.Pool, services: Any) -> None:
    # A worker frozen between asyncpg's prepare and bind of a chunk write holds chunks' lock with
    # nothing to end it. CREATE INDEX IF NOT EXISTS, which every worker ran at its first
    # embedding, queued for a SHARE lock behind it, and every chunk write queued behind that:
    # the other workers stalled until command_timeout (60 s) and their items failed as timeout.
    known = f"test-model-{uuid.uuid4().hex[:8]}"
    new = f"test-model-{uuid.uuid4().hex[:8]}"
    assert await documents.ensure_vector_index(pool, known, 8)
    async with StoppedClient(services.postgres.url) as frozen:
        await frozen.stop_in("DELETE FROM chunks WHERE idx < 0")
        async with asyncio.timeout(5):
            assert await documents.ensure_vector_index(pool, known, 8)  # there: found at once
        # a new model's index is not made while the frozen writer holds chunks, and it waits
        # for it only a moment: the chunk writes that queue behind it meanwhile go on
        asking = asyncio.create_task(documents.ensure_vector_index(pool, new, 8))
        async with asyncio.timeout(5):
            await pool.execute("DELETE FROM chunks WHERE idx < 0")
            assert not await asking  # the next item asks again
    assert await documents.ensure_vector_index(pool, new, 8)  # the writer gone: made
    for model in (known, new):
        await _drop(pool, model)


async def _indexes(pool: asyncpg.Pool, model: str) -> list[str]:
    rows = await pool.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'chunks'"
                            " AND indexdef LIKE '%' || $1 || '%'", model)
    return [r["indexname"] for r in rows]


async def _drop(pool: asyncpg.Pool, model: str) -> None:
    for name in await _indexes(pool, model):
        await pool.execute(f"DROP INDEX {name}")


async def test_the_local_models_index_is_the_migrations_not_a_second_one(
        pool: asyncpg.Pool) -> None:
    # the migrations make the local model's index; a worker's first embedding asks for it, and
    # it made a second, identical one (every chunk stored then updated two graphs)
    assert await documents.ensure_vector_index(pool, LOCAL_MODEL, LOCAL_DIM)
    assert await _indexes(pool, LOCAL_MODEL) == [
        documents.vector_index_name(LOCAL_MODEL, LOCAL_DIM)]
