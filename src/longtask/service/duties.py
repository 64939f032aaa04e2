"""The periodic duties that keep Postgres and Redis in step (one worker does each per beat):
reap items whose worker died, end tasks past their deadline, re-enqueue what Redis lost."""

from __future__ import annotations

import logging

from longtask.broker import fair, queue
from longtask.broker.outbox import announce_cancel
from longtask.core.models import PendingJob
from longtask.service.deps import Deps
from longtask.service.tasks import enqueue
from longtask.store import items as item_store
from longtask.store import tasks as task_store

log = logging.getLogger(__name__)

RECONCILE_AFTER_SECONDS = 10.0  # a pending item older than this with no ARQ job is re-enqueued
RECONCILE_EVERY_SECONDS = 5.0
RECONCILE_HORIZON_SECONDS = 60.0  # deferred items are re-enqueued only this close to their time


async def reap(deps: Deps) -> int:
    """Hand items whose worker died (no heartbeat for a lease, or no claim a lease after it took
    their job) to another worker now, not after ARQ's job_timeout; end tasks past their
    deadline. The number of items and tasks moved."""
    settings = deps.settings
    expired = await item_store.expire_leases(deps.pool, settings.max_retries + 1,
                                             settings.queue_name)
    jobs = expired.jobs + await _unclaimed(deps)
    ended = await task_store.expire_deadlines(deps.pool, settings.queue_name)
    deps.outbox.send(expired.events + [event for task in ended for event in task.events])
    for task in ended:
        await announce_cancel(deps.redis, task.task.id)
        # their items that never started leave the tenant's line, as a cancel's do
        await fair.withdraw(deps.redis, settings, task.task.tenant, task.task.kind,
                            task.withdrawn)
    # the dead workers' jobs give their slots back (and never run) before the new ones queue
    await fair.retire(deps.redis, settings, expired.retired)
    return await enqueue(deps, jobs) + len(ended)


async def reconcile(deps: Deps) -> int:
    """Enqueue what Postgres holds as pending but Redis may have lost (restart, flush); ARQ
    ignores a job id it still holds. A pending item whose job a worker took long ago without
    claiming the item (it died or froze in between) gets a new job id: ARQ would hold the old
    one until job_timeout.

    First, jobs that ended unseen leave the ARQ queue (the queue depth counts them no more) and
    give their dispatch slots back: a worker killed after its item ended but before ARQ ended
    the job (which ARQ holds for job_timeout), or a job ARQ dropped before it ran (see
    broker.fair). With one ARQ queue (no fair dispatch), the jobs workers hold are looked up on
    the queue instead (`queue.held`)."""
    settings = deps.settings
    running = await fair.dispatched(deps.redis, settings) if settings.fair_dispatch \
        else await queue.held(deps.redis, settings.queue_name, settings.job_timeout)
    over = await item_store.ended_jobs(deps.pool, running)
    freed = await fair.retire(deps.redis, settings, over) + await fair.sweep(deps.redis, settings)
    if freed:
        log.warning("%d job(s) ended unseen; off the queue, their tenants' slots free", freed)
    pending = await item_store.pending_jobs(deps.pool, RECONCILE_AFTER_SECONDS,
                                            RECONCILE_HORIZON_SECONDS, deps.settings.queue_name)
    if not pending:
        return 0
    taken = await queue.taken(deps.redis, pending)
    lost = [job for job, held in zip(pending, taken) if held]
    if lost:
        log.warning("%d item job(s) were taken by a worker that never claimed them", len(lost))
        pending = [job for job, held in zip(pending, taken) if not held]
        pending += await _retake(deps, lost)
    return await enqueue(deps, pending)


async def _retake(deps: Deps, lost: list[PendingJob]) -> list[PendingJob]:
    """New job ids for items whose job a worker took and never claimed; the old jobs give their
    dispatch slots back now, not when ARQ's in-progress marker expires."""
    retaken = await item_store.retake(deps.pool, lost)
    again = {job.item_id for job in retaken}
    await fair.retire(deps.redis, deps.settings,
                      [job.job_id for job in lost if job.item_id in again])
    return retaken


async def _unclaimed(deps: Deps) -> list[PendingJob]:
    """Items whose job a worker took a lease ago or more and never claimed: it froze or died in
    between (a claim follows the take within milliseconds). As silent as a worker that stopped
    heartbeating, so handed on as soon, under a new job id for the same attempt (ARQ holds the
    old one until job_timeout). The reconciler's sweep finds them too, after 10 s pending and
    every 5 s; with a short lease, well after the frozen worker's claimed items moved on."""
    settings = deps.settings
    pending = await item_store.pending_jobs(deps.pool, settings.lease_seconds, 0.0,
                                            settings.queue_name)
    if not pending:
        return []
    ages = await queue.taken_for(deps.redis, pending, settings.job_timeout)
    lost = [job for job, age in zip(pending, ages, strict=True)
            if age is not None and age >= settings.lease_seconds]
    if not lost:
        return []
    log.warning("%d item job(s) were taken by a worker that never claimed them within a lease",
                len(lost))
    return await _retake(deps, lost)
