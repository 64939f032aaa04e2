"""Use cases of a task: submit, retry, cancel, delete. Each commits to Postgres first, then
enqueues its jobs and publishes its events: a failure after the commit loses nothing (the
reconciler enqueues what Redis lacks; listeners read missed events from Postgres)."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from longtask.broker import fair
from longtask.broker.outbox import announce_cancel
from longtask.core.kinds import Kind, params_hash
from longtask.core.models import Created, NewItem, PendingJob, Task
from longtask.service.deps import Deps
from longtask.service.params import items_of
from longtask.store import tasks as task_store


async def submit(deps: Deps, tenant: str, kind: Kind, params: Any, *,
                 idempotency_key: str | None = None, deadline_seconds: float | None = None,
                 run_at: datetime | None = None) -> Created:
    """A new task of `kind`, one item per payload its splitter makes, once the params fit the
    kind's schema (Unacceptable otherwise); or, for an Idempotency-Key used before with the same
    request, the task that request made."""
    return await create(deps, tenant, kind.name, params, items_of(kind, params),
                        idempotency_key=idempotency_key, deadline_seconds=deadline_seconds,
                        run_at=run_at)


async def create(deps: Deps, tenant: str, kind: str, params: Any, items: list[NewItem], *,
                 idempotency_key: str | None = None, deadline_seconds: float | None = None,
                 run_at: datetime | None = None, retry_of: str | None = None) -> Created:
    """Store a task with its items, then enqueue them: Unavailable when the queue is full,
    LimitReached when the tenant has its most open tasks or queued jobs. The rows commit
    together with the other submits that arrived meanwhile (db.group), and this returns once
    they are durable."""
    if deps.admission is not None:
        await deps.admission.room_in_queue(tenant)
    created = await deps.commits.run(partial(
        task_store.create, tenant=tenant, kind=kind, params=params, items=items,
        idempotency_key=idempotency_key,
        request_hash=params_hash(kind, params) if idempotency_key else None,
        deadline_seconds=deadline_seconds, max_open=deps.settings.max_open_tasks, run_at=run_at,
        retry_of=retry_of, queue=deps.settings.queue_name, savepoint=False))
    await enqueue(deps, created.jobs)
    return created


async def retry(deps: Deps, tenant: str, task_id: str) -> Created:
    """Run a finished task's failed items again, as a new task that points at it."""
    old, items = await task_store.failed_items(deps.pool, tenant, task_id)
    return await create(deps, tenant, old.kind, old.params, items, retry_of=old.id)


async def cancel(deps: Deps, tenant: str, task_id: str) -> Task:
    """Cancel a task and tell its listeners and workers. Conflict if it ended otherwise;
    idempotent if it was canceled already."""
    canceled = await task_store.cancel(deps.pool, tenant, task_id)
    if canceled.events:
        deps.outbox.send(canceled.events)
        await announce_cancel(deps.redis, canceled.task.id)
        # out of the tenant's line at once: they count against its queue depth no more
        await fair.withdraw(deps.redis, deps.settings, tenant, canceled.task.kind,
                            canceled.withdrawn)
    return canceled.task


async def delete(deps: Deps, tenant: str, task_id: str) -> None:
    """Delete a task that has ended, with its items and events; Conflict if it is active."""
    await task_store.delete(deps.pool, tenant, task_id)


async def enqueue(deps: Deps, jobs: list[PendingJob]) -> int:
    """Enqueue committed item jobs, each to wait for its tenant's turn (after the commit: the
    reconciler covers a failure here)."""
    added = await fair.enqueue(deps.redis, deps.settings, jobs)
    if deps.admission is not None and jobs:
        deps.admission.enqueued(jobs[0].tenant, added)  # the web enqueues one tenant's at a time
    return added
