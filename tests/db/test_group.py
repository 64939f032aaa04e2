"""Group commit (db.group) on a real Postgres: writes that arrive while a commit is in flight share
the next one; each caller gets its own result or its own error, and a write that fails its
transaction costs the others nothing."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import asyncpg
import pytest

from longtask.core.errors import LimitReached
from longtask.core.models import Created, NewItem
from longtask.db import Db
from longtask.db.group import GroupCommit
from longtask.store import tasks as task_store


def submit(tenant: str, key: str | None = None, max_open: int | None = None) -> Any:
    return partial(task_store.create, tenant=tenant, kind="k", params={"n": 1},
                   items=[NewItem({})], idempotency_key=key,
                   request_hash="h" if key else None, max_open=max_open, savepoint=False)


async def stored(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT tenant, count(*) AS n FROM tasks GROUP BY tenant")
    return {r["tenant"]: r["n"] for r in rows}


async def test_writes_that_arrive_during_a_commit_share_the_next(pool: asyncpg.Pool) -> None:
    commits = GroupCommit(pool, turns=1, most=100)

    async def write_and_say_transaction(db: Db) -> tuple[Created, int]:
        created = await submit("t")(db)
        return created, await db.fetchval("SELECT txid_current()")

    done = await asyncio.gather(*(commits.run(write_and_say_transaction) for _ in range(30)))
    # the first goes at once, alone; the 29 that came meanwhile go together in the next
    assert len({txid for _, txid in done}) == 2
    assert await stored(pool) == {"t": 30}
    assert len({created.task.id for created, _ in done}) == 30


async def test_a_refused_write_is_its_callers_answer_only(pool: asyncpg.Pool) -> None:
    await task_store.create(pool, tenant="full", kind="k", params={}, items=[NewItem({})])
    commits = GroupCommit(pool, turns=1)
    first = asyncio.create_task(commits.run(submit("a")))
    answers = await asyncio.gather(
        *(commits.run(submit("a")) for _ in range(5)),
        commits.run(submit("full", max_open=1)),  # the tenant has no room: 429
        *(commits.run(submit("b")) for _ in range(5)), return_exceptions=True)
    await first
    assert isinstance(answers[5], LimitReached)
    assert all(isinstance(a, Created) for i, a in enumerate(answers) if i != 5)
    assert await stored(pool) == {"a": 6, "b": 5, "full": 1}


async def test_a_write_that_fails_the_transaction_leaves_the_others_to_commit_alone(
        pool: asyncpg.Pool) -> None:
    commits = GroupCommit(pool, turns=1)

    async def bad(db: Db) -> None:
        await db.execute("SELECT 1 / 0")

    async def swallowed(db: Db) -> None:  # a write that hides the database's error
        try:
            await db.execute("SELECT 1 / 0")
        except asyncpg.DivisionByZeroError:
            raise LimitReached("said otherwise", retry_after=1) from None

    first = asyncio.create_task(commits.run(submit("a")))
    for failing in (bad, swallowed):
        answers = await asyncio.gather(
            *(commits.run(submit("a")) for _ in range(3)), commits.run(failing),
            *(commits.run(submit("b")) for _ in range(3)), return_exceptions=True)
        expected = asyncpg.DivisionByZeroError if failing is bad else LimitReached
        assert isinstance(answers[3], expected)
        assert all(isinstance(a, Created) for i, a in enumerate(answers) if i != 3)
    await first
    # nothing lost, nothing twice: every caller told "created" has its row
    assert await stored(pool) == {"a": 7, "b": 6}


async def test_the_same_idempotency_key_twice_in_one_commit_makes_one_task(
        pool: asyncpg.Pool) -> None:
    commits = GroupCommit(pool, turns=1)
    first = asyncio.create_task(commits.run(submit("t")))
    one, two = await asyncio.gather(commits.run(submit("t", key="k1")),
                                    commits.run(submit("t", key="k1")))
    await first
    assert one.task.id == two.task.id and (one.replayed, two.replayed) == (False, True)
    assert await stored(pool) == {"t": 2}


@pytest.mark.parametrize("most", [1, 4])
async def test_at_most_so_many_writes_share_a_commit(pool: asyncpg.Pool, most: int) -> None:
    commits = GroupCommit(pool, turns=1, most=most)

    async def transaction(db: Db) -> int:
        return int(await db.fetchval("SELECT txid_current()"))

    done = await asyncio.gather(*(commits.run(transaction) for _ in range(9)))
    assert len(set(done)) == (9 if most == 1 else 1 + 2)  # 1, then 4 + 4
    await commits.close()
