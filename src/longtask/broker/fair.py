"""Fair dispatch: every tenant's item jobs wait in Redis until it is their turn, and only then go
onto the ARQ queue, so one tenant's backlog never stands in front of another's work.

Why: ARQ runs its queue in score order, first come first served. A tenant's 1,000-item batch put
straight on it holds every worker slot until it drains, and a tenant with one item waits behind
all of it. ARQ stays the only thing that runs jobs (its polling, retries, timeouts, abort); this
module decides *when* a job is handed to it.

    submit / retry / reaper / reconciler / schedules
        |  enqueue: wait:<lane> (sorted by start time), the lane joins the ring
        v
    ring of lanes with work that may start now  --dispatch, one job per lane per turn-->  ARQ queue
        ^   a lane at its tenant's cap is parked; it rejoins when that tenant's job ends  |
        +-------------------------- a job ends: its slot is freed, dispatch again <-------+

- **Lanes.** A lane is one tenant's waiting jobs; a kind with a cap of its own
  (LONGTASK_KIND_CONCURRENCY) gets a lane of its own per tenant. Jobs in a lane go in the order
  they may start (deferred ones and retries wait on a timer until their time).
- **Turns.** Dispatch takes the lane at the head of the ring, moves its first job onto the ARQ
  queue and puts the lane at the tail: round-robin over tenants with work waiting, as Hatchet's
  GROUP_ROUND_ROBIN and Inngest's per-key queues do. Not Sidekiq's weighted random pick: a random
  order bounds nobody's wait, and weights cap nothing.
- **Caps.** A tenant's dispatched-and-unended jobs stay under LONGTASK_TENANT_CONCURRENCY (and a
  lane's under its kind's cap). Counting dispatched jobs, not started ones, keeps the promise at
  every instant: a job can only run once it is dispatched. A lane that meets a cap is parked
  out of the ring, so a capped tenant costs dispatch nothing until one of its jobs ends. (Why
  the default cap is 32, not one worker's 16: the README's "Many tenants, one fleet".)
- **How much goes onto the ARQ queue.** Only while it holds fewer jobs (ARQ keeps a job there
  until it ends, so running ones count) than the fleet runs at once plus a spare. The fleet's
  capacity is the sum of the live workers' max_jobs, which each worker publishes with its
  heartbeat. The spare lets ARQ start the next job the moment a slot frees (it starts jobs from
  the ids it read at its last poll, and polls every 50 ms), but every spare job is one that a
  newcomer's job waits behind. So it is what the fleet ends in SPARE_MS (a decaying average of
  the rate jobs end at): a fleet of no-op jobs gets its whole capacity again as a spare and loses
  no throughput, one of 3-second items gets a job or two, and either way the newcomer waits about
  SPARE_MS longer than for the next slot to free. The spare is at most four fleets' worth: what
  one ARQ poll reads (5 x max_jobs ids) beside the running ones.
- **Turns in ARQ's order.** ARQ starts jobs in score order and ties by id, so each dispatched
  job's score is a microsecond after the one before (and a millisecond in the past: ARQ skips a
  score ahead of its own clock). A lane alone in the ring would take every turn, so it takes as
  many jobs as the room and its caps allow in one go.
- **When dispatch runs.** In the same script call as an enqueue; when ARQ has ended jobs (the
  worker's `after_job_end` hands the job to `broker.notices`, which tells endings in batches:
  one call carries every ending that came while the one before was on its way); and from every
  worker's loop each second (deferred jobs coming due, a fleet grown).
- **A slot is freed once per dispatched job.** The `run` hash maps each dispatched job to its
  lane; freeing deletes the entry, and only the call that deleted it gives the slot back. The
  paths: ARQ ended the job (the worker's `after_job_end`; gone from the ARQ queue means ended for
  good, while a Retry or a worker stopped mid-run leaves it there to run again, and it keeps its
  slot); the reaper or the reconciler gave its item a new job (the old one is also taken off the
  ARQ queue, so no worker runs it); and the sweep, every reconcile, of dispatched jobs whose run
  Postgres says is over (a worker killed after its item ended but before ARQ ended the job, which
  ARQ would hold for job_timeout) or that ARQ holds nowhere (it dropped them before they ran).
- **Cancel** takes a task's waiting jobs out of their lane at once, so they stop counting
  against the tenant's queue depth; its dispatched ones free their slots at the next sweep.
- **Redis loses everything** (restart, flush): the lanes and counts go with the ARQ queue, and
  the reconciler enqueues every pending item again from Postgres, as before. Items still running
  then are no longer counted, so a tenant may run over its cap until they end (one turnover).

Every write happens in one Lua script (fair.lua), so each step is atomic however many web
processes and workers call it. Its keys are made inside the script from one prefix (undeclared,
and ARQ's keys share no hash slot either): plain Redis or Sentinel, not Redis Cluster. The cost:
a round trip per batch of endings, and more Redis commands per item, nearly all inside scripts
(bench.fairness reports both sides). LONGTASK_FAIR_DISPATCH=0 puts jobs
straight onto the ARQ queue, as before, with no caps, turns or tenant queue depth.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from arq import ArqRedis
from arq.constants import (
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)
from arq.utils import timestamp_ms
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from longtask.broker import keys as redis_keys
from longtask.broker import queue
from longtask.config import Settings
from longtask.core.models import PendingJob

log = logging.getLogger(__name__)

DISPATCH_EVERY_SECONDS = 1.0  # each worker's safety net: deferred jobs due, capacity grown
BATCH = 100  # jobs one call may dispatch (Redis runs a script alone: keep each call short)
SPARE_MS = 250  # the spare on the ARQ queue: the jobs the fleet ends in this long (5 ARQ polls)
_ENQUEUE_BATCH = 500

_script: AsyncScript | None = None


@dataclass(frozen=True)
class Depth:
    """Item jobs waiting their turn, and jobs on the ARQ queue (dispatched, running included)."""

    waiting: int
    dispatched: int

    @property
    def total(self) -> int:
        return self.waiting + self.dispatched


def lane(settings: Settings, tenant: str, kind: str) -> str:
    """A job's lane: its tenant, and its kind if that has a cap of its own. The length in bytes
    comes first, so no tenant name can pass for another's lane."""
    own = kind if kind in dict(settings.kind_concurrency) else ""
    return f"{len(tenant.encode())}:{tenant}{own}"


async def enqueue(redis: ArqRedis, settings: Settings, jobs: Iterable[PendingJob]) -> int:
    """Put committed item jobs in their tenants' lanes and dispatch what may go now; a job id
    waiting, queued, running or with a result already is left alone. The number added.

    Failure is logged, not raised: the rows are committed, and the reconciler enqueues what
    Redis does not hold.
    """
    if not settings.fair_dispatch:
        return await queue.enqueue(redis, settings.queue_name, jobs)
    todo = list(jobs)
    now = timestamp_ms()
    added = 0
    for start in range(0, len(todo), _ENQUEUE_BATCH):
        args: list[Any] = []
        for job in todo[start:start + _ENQUEUE_BATCH]:
            args += [job.job_id, lane(settings, job.tenant, job.kind), queue.due_ms(job, now),
                     queue.job_body(job, now)]
        done = await _call(redis, settings, "enqueue", args, now=now)
        if done is None:
            log.warning("enqueue failed; the reconciler will retry")
            break
        added += done[0]
    return added


async def dispatch(redis: ArqRedis, settings: Settings) -> int:
    """Move jobs whose turn it is onto the ARQ queue, as far as the fleet has room."""
    if not settings.fair_dispatch:
        return 0
    return (await _call(redis, settings, "dispatch", []) or (0, 0))[1]


async def finished(redis: ArqRedis, settings: Settings, job_ids: Sequence[str]) -> int:
    """ARQ has ended a run of each of `job_ids`: free the slots of those that ended for good,
    then dispatch. The number freed."""
    if not job_ids or not settings.fair_dispatch:
        return 0
    return (await _call(redis, settings, "finished", list(job_ids)) or (0, 0))[0]


async def retire(redis: ArqRedis, settings: Settings, job_ids: Sequence[str]) -> int:
    """These jobs' runs are over in Postgres (their items ended, or have new jobs: the reaper, a
    retake): take them off the ARQ queue, so no worker runs them, and free their slots. The
    number freed."""
    if not settings.fair_dispatch:
        return await queue.retire(redis, settings.queue_name, job_ids)
    if not job_ids:
        return 0
    return (await _call(redis, settings, "retire", list(job_ids)) or (0, 0))[0]


async def sweep(redis: ArqRedis, settings: Settings) -> int:
    """Free the slots of dispatched jobs that ARQ holds nowhere any more; the number freed."""
    if not settings.fair_dispatch:
        return 0
    return (await _call(redis, settings, "sweep", []) or (0, 0))[0]


async def withdraw(redis: ArqRedis, settings: Settings, tenant: str, kind: str,
                   job_ids: Sequence[str]) -> int:
    """Take the waiting jobs of canceled items out of their lane; the number taken. One already
    dispatched is left to the sweep (its item is canceled, so it frees its slot unrun)."""
    if not job_ids or not settings.fair_dispatch:
        return 0
    args = [lane(settings, tenant, kind), *job_ids]
    return (await _call(redis, settings, "withdraw", args) or (0, 0))[0]


async def dispatched(redis: ArqRedis, settings: Settings) -> list[str]:
    """The ids of the jobs holding a dispatch slot now."""
    if not settings.fair_dispatch:
        return []
    try:
        ids = await redis.hkeys(redis_keys.fair_prefix(settings.queue_name) + "run")
    except (RedisError, OSError) as exc:
        log.warning("dispatched jobs not read: %s", exc)
        return []
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


async def heartbeat(redis: ArqRedis, settings: Settings, worker_id: str, ttl: float) -> None:
    """Count this worker's max_jobs in the fleet's capacity for `ttl` seconds more."""
    if not settings.fair_dispatch:
        return
    await _call(redis, settings, "heartbeat",
                [worker_id, settings.worker_concurrency, int(ttl * 1000)])


async def leave(redis: ArqRedis, settings: Settings, worker_id: str, ttl: float) -> None:
    """Take this worker out of the fleet's capacity (it is stopping)."""
    if not settings.fair_dispatch:
        return
    await _call(redis, settings, "leave", [worker_id, 0, int(ttl * 1000)])


async def depth(redis: ArqRedis, queue_name: str) -> Depth:
    """Waiting and dispatched jobs of every tenant; ARQ's cron jobs on the queue left out."""
    crons = 0
    async for _ in redis.zscan_iter(queue_name, match="cron:*", count=1000):
        crons += 1
    everyone, _ = await depths(redis, queue_name, "")
    return Depth(everyone.waiting, everyone.dispatched - crons)


async def depths(redis: ArqRedis, queue_name: str, tenant: str) -> tuple[Depth, Depth]:
    """In one round trip: the waiting and dispatched jobs of every tenant (ARQ's cron jobs
    included, a few at most), and those of `tenant` (its dispatched jobs that have not ended)."""
    counts = redis_keys.fair_prefix(queue_name) + "count"
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(counts, ["w", f"w:{tenant}", f"r:{tenant}"])
        pipe.zcard(queue_name)
        (waiting, mine, running), queued = await pipe.execute()
    return Depth(int(waiting or 0), int(queued)), Depth(int(mine or 0), int(running or 0))


async def _call(redis: ArqRedis, settings: Settings, op: str, args: list[Any], *,
                now: int | None = None) -> tuple[int, int] | None:
    """Run one operation of fair.lua; (its count, jobs dispatched), or None if Redis is away."""
    global _script
    if _script is None:  # made once (it hashes the script); called with any client
        source = (resources.files(__package__) / "fair.lua").read_text()
        _script = redis.register_script(source)
    kinds = [part for pair in settings.kind_concurrency for part in pair]
    argv = [op, timestamp_ms() if now is None else now, redis_keys.fair_prefix(settings.queue_name),
            job_key_prefix, result_key_prefix, in_progress_key_prefix,
            getattr(redis, "expires_extra_ms", expires_extra_ms),  # a plain client: ARQ's default
            settings.tenant_concurrency, BATCH, SPARE_MS,
            len(settings.kind_concurrency), *kinds, *args]
    try:
        done = await _script([settings.queue_name], argv, client=redis)
    except (RedisError, OSError) as exc:
        log.warning("fair dispatch (%s) failed: %s", op, exc)
        return None
    return int(done[0]), int(done[1])
