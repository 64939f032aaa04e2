"""The vector index of an embedding model is made once, however many items ask at once."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from longtask.store import documents
from tests.support import wait_for


async def test_a_second_item_asking_for_a_new_models_index_waits_and_succeeds(
        pool: asyncpg.Pool) -> None:
    # the first batch embedded with a model new to the database: each item asks for the model's
    # index as it stores its first chunks. CREATE INDEX IF NOT EXISTS alone let the second find
    # no index while the first was still making it, and fail with a unique violation on
    # pg_class once the first committed (seen in a full run as an item's internal_error)
    model = f"test-model-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as first:
        async with first.transaction():
            await documents.ensure_vector_index(first, model, 8)  # made, not yet committed
            second = asyncio.create_task(documents.ensure_vector_index(pool, model, 8))

            async def second_waits() -> bool:  # (asked outside the transaction, whose view of
                # pg_stat_activity is a snapshot taken once)
                return bool(await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"))

            await wait_for(second_waits, timeout=10, what="the second to wait for the first")
        await second  # the first committed: the second finds the index made and succeeds
    indexes = await pool.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'chunks'"
                               " AND indexdef LIKE '%' || $1 || '%'", model)
    assert len(indexes) == 1
    await pool.execute(f"DROP INDEX {indexes[0]['indexname']}")
