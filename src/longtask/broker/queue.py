"""Item jobs on the ARQ queue: enqueue many in one round trip, which ones a worker took, and
taking off the queue the jobs whose runs are over in Postgres (a dead worker's)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from arq import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from longtask.broker import keys as redis_keys
from longtask.broker.connection import dumps
from longtask.core.models import PendingJob

log = logging.getLogger(__name__)

RUN_ITEM = "run_item"  # the one ARQ function: run an item of a task
# ARQ marks a job it starts in progress for its worker's job_timeout plus this many seconds
_ARQ_IN_PROGRESS_EXTRA = 10
HELD_HEAD = 1000  # `held` looks this far into the queue: well past what a fleet runs at once


def _in_progress_ms(job_timeout: float) -> int:
    """How long ARQ's in-progress marker lives from a take: until then ARQ runs it nowhere else."""
    return int((job_timeout + _ARQ_IN_PROGRESS_EXTRA) * 1000)


# ARQ's enqueue_job, for many jobs in one round trip: a job whose id is queued, running or has
# a result already is left alone (ARQ's own check, WATCH + EXISTS + MULTI, is three round trips
# for each job). KEYS: the queue, then each job's key and result key; ARGV: four per job.
_ENQUEUE = """
local added = 0
for j = 1, (#KEYS - 1) / 2 do
    local job_key, result_key, a = KEYS[2 * j], KEYS[2 * j + 1], 4 * (j - 1)
    if redis.call('exists', job_key, result_key) == 0 then
        redis.call('psetex', job_key, ARGV[a + 3], ARGV[a + 4])
        redis.call('zadd', KEYS[1], ARGV[a + 2], ARGV[a + 1])
        added = added + 1
    end
end
return added
"""
_BATCH = 500  # jobs per script call: Redis runs a script alone, so keep each one short
_enqueue_script: AsyncScript | None = None


async def enqueue(arq: ArqRedis, queue_name: str, jobs: Iterable[PendingJob]) -> int:
    """Enqueue item jobs in ARQ's format; a job id already queued or running is left alone.
    The number enqueued now.

    Failure is logged, not raised: the rows are committed, and the reconciler enqueues what
    Redis does not hold.
    """
    global _enqueue_script
    if _enqueue_script is None:  # made once (it hashes the script); called with any client
        _enqueue_script = arq.register_script(_ENQUEUE)
    todo = list(jobs)
    added = 0
    try:
        for start in range(0, len(todo), _BATCH):
            keys, args = [queue_name], []
            for job in todo[start:start + _BATCH]:
                keys += [job_key_prefix + job.job_id, result_key_prefix + job.job_id]
                args += _job_args(arq, job)
            added += int(await _enqueue_script(keys, args, client=arq))
    except (RedisError, OSError) as exc:
        log.warning("enqueue failed; the reconciler will retry: %s", exc)
    return added


async def retire(arq: ArqRedis, queue_name: str, job_ids: Sequence[str]) -> int:
    """Take jobs whose runs are over in Postgres (their items ended, or have new jobs) off the
    ARQ queue, so that no worker runs them and the queue depth no longer counts them; the
    number taken. ARQ itself would keep a dead worker's job there until job_timeout + 10 s."""
    if not job_ids:
        return 0
    try:
        async with arq.pipeline(transaction=True) as pipe:
            pipe.zrem(queue_name, *job_ids)
            pipe.delete(*(job_key_prefix + job_id for job_id in job_ids))
            taken, _ = await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("ended jobs not taken off the queue: %s", exc)
        return 0
    return int(taken)


async def held(arq: ArqRedis, queue_name: str, job_timeout: float,
               head: int = HELD_HEAD) -> list[str]:
    """The jobs on the ARQ queue that a worker has taken (its in-progress marker is set), looked
    for where they can be: among the first `head` (ARQ takes jobs in queue order, and a taken
    job keeps its place), and among the last `head` due within job_timeout + 10 s (where a job
    is moved back to once its item is claimed, until ARQ would run it again itself)."""
    now = timestamp_ms()
    until = now + _in_progress_ms(job_timeout)
    try:
        async with arq.pipeline(transaction=False) as pipe:
            pipe.zrange(queue_name, 0, head - 1)
            pipe.zrevrangebyscore(queue_name, until, now, start=0, num=head)
            first, moved = await pipe.execute()
        ids = list(dict.fromkeys(i.decode() if isinstance(i, bytes) else str(i)
                                 for i in [*first, *moved]))
        if not ids:
            return []
        async with arq.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(redis_keys.arq_in_progress(job_id))
            marks = await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("jobs held by workers not read: %s", exc)
        return []
    return [job_id for job_id, mark in zip(ids, marks, strict=True) if mark]


def _job_args(arq: ArqRedis, job: PendingJob) -> list[Any]:
    """ARGV for one job, as `ArqRedis.enqueue_job` would write it: id, score, expiry, body."""
    now = timestamp_ms()
    score = due_ms(job, now)
    return [job.job_id, score, score - now + arq.expires_extra_ms, job_body(job, now)]


def due_ms(job: PendingJob, now: int) -> int:
    """When the job may start, as an ARQ score: its `run_after`, or now."""
    score = to_unix_ms(job.run_after) if isinstance(job.run_after, datetime) else now
    return max(score, now)


def job_body(job: PendingJob, now: int) -> bytes:
    """The job as ARQ stores it (its key's value), enqueued at `now`."""
    return serialize_job(RUN_ITEM, (job.item_id,), {}, None, now, serializer=dumps)


async def taken(arq: ArqRedis, jobs: list[PendingJob]) -> list[bool]:
    """For each job, whether some worker has taken it (ARQ's in-progress marker)."""
    async with arq.pipeline(transaction=False) as pipe:
        for job in jobs:
            pipe.exists(redis_keys.arq_in_progress(job.job_id))
        return [bool(held) for held in await pipe.execute()]


async def taken_for(arq: ArqRedis, jobs: list[PendingJob],
                    job_timeout: float) -> list[float | None]:
    """For each job, how many seconds ago a worker took it; None if none has. ARQ's in-progress
    marker lives job_timeout + 10 s from the take (on a job of ours), so what it has left says."""
    async with arq.pipeline(transaction=False) as pipe:
        for job in jobs:
            pipe.pttl(redis_keys.arq_in_progress(job.job_id))
        left = await pipe.execute()
    full = _in_progress_ms(job_timeout)
    return [None if ms < 0 else max(0.0, (full - ms) / 1000) for ms in left]


async def hold(arq: ArqRedis, queue_name: str, job_ids: list[str], job_timeout: float) -> None:
    """Move jobs whose items a worker has claimed back in the queue's order, to when ARQ would
    run them again itself (their in-progress marker's end), if they are still queued.

    ARQ keeps a running job on its queue until it ends, and each worker's poll reads the first
    max(5 x max_jobs, 100) ids by score: running jobs at the front fill that read on a fleet
    of seven default workers or more, and the jobs behind them wait for one to end while slots
    sit idle; on any fleet, each poll spends a round trip or three per running job it skips.
    Moved, they are past every poll's `now` until ARQ's own retry time, which they keep."""
    until = timestamp_ms() + _in_progress_ms(job_timeout)
    await arq.zadd(queue_name, {job_id: until for job_id in job_ids}, xx=True)
