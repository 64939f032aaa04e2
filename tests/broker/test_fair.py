"""broker.fair on a real Redis, with no worker: ARQ's part (ending a job) is played by the test,
so the order of dispatch and every count can be checked exactly."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from arq import ArqRedis

from longtask.broker import connection, fair
from longtask.broker.notices import Notices
from longtask.config import Settings
from longtask.core.models import PendingJob, item_job_id
from tests.conftest import Services
from tests.support import wait_for

QUEUE = "longtask:fair-unit"


@pytest.fixture
async def arq(services: Services, clean: None) -> AsyncIterator[ArqRedis]:
    client = await connection.connect(services.redis.url)
    yield client
    await client.aclose()


def settings(**values: Any) -> Settings:
    return Settings(queue_name=QUEUE, **values)


def jobs(tenant: str, count: int, kind: str = "k", at: datetime | None = None) -> list[PendingJob]:
    made = []
    for _ in range(count):
        item = str(uuid.uuid4())
        made.append(PendingJob(item, item_job_id(item, 1), at, tenant=tenant, kind=kind))
    return made


async def queued(arq: ArqRedis) -> set[str]:
    """The job ids on the ARQ queue."""
    return {i.decode() for i in await arq.zrange(QUEUE, 0, -1)}


def ids(jobs: list[PendingJob]) -> set[str]:
    return {job.job_id for job in jobs}


def a_job(made: list[PendingJob], among: set[str]) -> PendingJob:
    return next(job for job in made if job.job_id in among)


async def end(arq: ArqRedis, s: Settings, job: PendingJob) -> int:
    """What ARQ does when a job ends (it leaves the queue), then the worker's after_job_end."""
    await arq.zrem(QUEUE, job.job_id)
    return await fair.finished(arq, s, [job.job_id])


async def test_tenants_take_turns(arq: ArqRedis) -> None:
    s = settings(tenant_concurrency=0, worker_concurrency=2)
    await fair.heartbeat(arq, s, "w", ttl=60)  # room: 2 slots and a spare of 1
    a, b = jobs("a", 6), jobs("b", 2)
    assert await fair.enqueue(arq, s, a) == 6
    assert await fair.enqueue(arq, s, b) == 2
    first = await queued(arq)
    assert len(first) == 3 and first <= ids(a)  # first come, while nobody else waits
    order = []
    for job_id in sorted(first):  # each job that ends lets the next go: A's turn, B's, A's
        before = await queued(arq) - {job_id}
        await arq.zrem(QUEUE, job_id)
        await fair.finished(arq, s, [job_id])
        order += ["a" if new in ids(a) else "b" for new in await queued(arq) - before]
    assert order == ["a", "b", "a"]
    mine = (await fair.depths(arq, QUEUE, "b"))[1]
    assert (mine.waiting, mine.dispatched) == (1, 1)


async def test_a_tenant_at_its_cap_waits_and_others_go_past(arq: ArqRedis) -> None:
    s = settings(tenant_concurrency=2, worker_concurrency=10)
    await fair.heartbeat(arq, s, "w", ttl=60)
    a, b = jobs("a", 5), jobs("b", 1)
    await fair.enqueue(arq, s, a)
    await fair.enqueue(arq, s, b)
    first = await queued(arq)
    assert len(first & ids(a)) == 2 and ids(b) <= first
    await end(arq, s, a_job(a, first))  # A's slot frees: A's lane is back in the ring
    assert len(await queued(arq) & ids(a)) == 2
    assert (await fair.depths(arq, QUEUE, "a"))[1].dispatched == 2


async def test_a_kind_with_a_cap_holds_up_only_its_own_jobs(arq: ArqRedis) -> None:
    s = settings(tenant_concurrency=0, worker_concurrency=10,
                 kind_concurrency=(("slow", 1),))
    await fair.heartbeat(arq, s, "w", ttl=60)
    slow, other = jobs("a", 3, kind="slow"), jobs("a", 2, kind="quick")
    await fair.enqueue(arq, s, slow)
    await fair.enqueue(arq, s, other)
    now = await queued(arq)
    assert len(now & ids(slow)) == 1 and ids(other) <= now


async def test_a_slot_is_freed_once_however_the_job_ends(arq: ArqRedis) -> None:
    s = settings(tenant_concurrency=3, worker_concurrency=10)
    await fair.heartbeat(arq, s, "w", ttl=60)
    await fair.enqueue(arq, s, jobs("a", 6))
    first, second, third = sorted(await queued(arq))  # A's cap
    await arq.zrem(QUEUE, first)  # ARQ ends it ...
    assert await fair.finished(arq, s, [first, first]) == 1  # the worker says so (twice: a batch)
    assert await fair.finished(arq, s, [first]) == 0  # and again: freed once
    assert await fair.retire(arq, s, [second, second]) == 1  # the reaper's way
    assert await fair.finished(arq, s, [second]) == 0  # ... and its worker woke up after
    await arq.zrem(QUEUE, third)  # ARQ dropped it, nobody told: the sweep finds it
    assert await fair.sweep(arq, s) == 1
    assert await fair.sweep(arq, s) == 0
    now = await queued(arq)
    assert len(now) == 3 and not now & {first, second, third}  # each freed slot taken again
    assert await fair.finished(arq, s, [min(now)]) == 0  # still on ARQ's queue: a re-run
    assert (await fair.depths(arq, QUEUE, "a"))[1].dispatched == 3
    assert set(await fair.dispatched(arq, s)) == now


async def test_withdrawn_jobs_leave_their_lane(arq: ArqRedis) -> None:
    s = settings(tenant_concurrency=1, worker_concurrency=4)
    await fair.heartbeat(arq, s, "w", ttl=60)
    a = jobs("a", 4)
    await fair.enqueue(arq, s, a)
    went = await queued(arq)
    assert await fair.withdraw(arq, s, "a", "k", [j.job_id for j in a]) == 3  # not the one gone
    mine = (await fair.depths(arq, QUEUE, "a"))[1]
    assert (mine.waiting, mine.dispatched) == (0, 1)
    (gone,) = went
    await arq.zrem(QUEUE, gone)
    assert await fair.finished(arq, s, [gone]) == 1
    assert await queued(arq) == set()  # nothing else of A's was left to go


async def test_a_job_already_known_is_not_enqueued_again(arq: ArqRedis) -> None:
    s = settings(worker_concurrency=1)
    a = jobs("a", 1)
    assert await fair.enqueue(arq, s, a) == 1  # no worker: it waits
    assert await fair.enqueue(arq, s, a) == 0  # the reconciler's second try
    await fair.heartbeat(arq, s, "w", ttl=60)
    assert await queued(arq) == ids(a)
    assert await fair.enqueue(arq, s, a) == 0  # on ARQ's queue now
    assert (await fair.depth(arq, QUEUE)).total == 1


async def test_a_deferred_job_goes_at_its_time_not_before(arq: ArqRedis) -> None:
    s = settings(worker_concurrency=4)
    await fair.heartbeat(arq, s, "w", ttl=60)
    at = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    later, now = jobs("a", 1, at=at), jobs("a", 1)
    await fair.enqueue(arq, s, later + now)
    assert await queued(arq) == ids(now)

    async def went() -> float | None:  # when the dispatch call that moved it had returned
        await fair.dispatch(arq, s)
        returned = time.time()
        return returned if await arq.zscore(QUEUE, later[0].job_id) is not None else None

    assert await wait_for(went, timeout=10, what="the deferred job to go") >= at.timestamp()


async def test_the_fleet_capacity_follows_the_workers(arq: ArqRedis) -> None:
    s = settings(tenant_concurrency=0, worker_concurrency=2)
    await fair.enqueue(arq, s, jobs("a", 20))
    assert await queued(arq) == set()  # no worker, nothing dispatched
    await fair.heartbeat(arq, s, "w1", ttl=60)
    await fair.heartbeat(arq, s, "w2", ttl=60)
    assert len(await queued(arq)) == 4 + 1  # both workers' slots and a spare of one
    await fair.leave(arq, s, "w1", ttl=60)
    await fair.heartbeat(arq, s, "w3", ttl=0.001)  # a worker whose heartbeat lapses at once
    assert await arq.get(f"longtask:fair:{QUEUE}:capacity") == b"4"

    async def lapsed() -> bool:  # the next heartbeat of another worker counts it out
        await fair.heartbeat(arq, s, "w2", ttl=60)
        return await arq.get(f"longtask:fair:{QUEUE}:capacity") == b"2"

    await wait_for(lapsed, timeout=5, what="w3 to be counted out")


async def test_a_workers_notices_go_in_batches(arq: ArqRedis) -> None:
    s = settings(tenant_concurrency=3, worker_concurrency=10, job_timeout=300)
    await fair.heartbeat(arq, s, "w", ttl=60)
    await fair.enqueue(arq, s, jobs("a", 9))
    first = sorted(await queued(arq))
    told = Notices(arq, s)
    told.claimed(first[0])  # its item claimed: out of the front of the queue, still on it
    for job_id in first[1:]:  # ARQ ends these; the worker tells without waiting
        await arq.zrem(QUEUE, job_id)
        told.ended(job_id)
        told.claimed(job_id)  # a notice that comes late puts nothing back on the queue
    await told.close()
    held = await arq.zscore(QUEUE, first[0])
    assert held is not None and held > (time.time() + 300) * 1000  # past every poll's `now`
    now = await queued(arq)
    assert len(now) == 3 and not now & set(first[1:])  # two slots freed, two more jobs gone
    assert (await fair.depths(arq, QUEUE, "a"))[1] == fair.Depth(4, 3)


async def test_arq_finds_the_jobs_in_the_order_of_their_turns(arq: ArqRedis) -> None:
    s = settings(tenant_concurrency=0, worker_concurrency=10)
    a, b = jobs("a", 3), jobs("b", 3)
    await fair.enqueue(arq, s, a)  # no worker yet: both wait
    await fair.enqueue(arq, s, b)
    await fair.heartbeat(arq, s, "w", ttl=60)  # room for all: they go in turns, A first
    order = ["a" if job_id.decode() in ids(a) else "b"
             for job_id in await arq.zrangebyscore(QUEUE, "-inf", "+inf")]
    assert order == ["a", "b"] * 3  # as ARQ reads them, not by job id


async def test_a_lane_alone_takes_its_jobs_in_one_go_up_to_its_cap(arq: ArqRedis) -> None:
    s = settings(tenant_concurrency=5, worker_concurrency=20)
    await fair.heartbeat(arq, s, "w", ttl=60)
    a = jobs("a", 8)
    assert await fair.enqueue(arq, s, a) == 8
    assert len(await queued(arq)) == 5  # its cap, not a job per turn
    assert (await fair.depths(arq, QUEUE, "a"))[1] == fair.Depth(3, 5)
    late = jobs("b", 1, at=datetime.now(timezone.utc) + timedelta(hours=1))
    await fair.enqueue(arq, s, late)  # not due: it stays behind, on a timer
    assert ids(late).isdisjoint(await queued(arq))
