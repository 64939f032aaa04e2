"""The scheduler duty: fire due schedules, each slot once, as ordinary tasks.

Run by the workers' `_duty` loop (one worker per beat, through a Redis lock), but correct with
any number at once: a due schedule row is claimed FOR UPDATE SKIP LOCKED, and its task is created
in the same transaction that moves `next_run_at` past now, so a slot fires exactly once or (if
the transaction fails) not yet. After downtime the next slot is the first after *now*: the missed
ones fire once together, not once each. The task's idempotency key names the slot too.

A firing is admitted as a submit is: it counts against the tenant's request rate and needs room
in the queue and under the tenant's open-task cap. A refused firing makes no task; why is kept
on the schedule (`last_error`) and the next slot tries again. Slots are never closer than
LONGTASK_MIN_SCHEDULE_SECONDS (a schedule made before that rule, or under a lower one, thins
out). Due schedules fire in rounds, one per tenant per round, oldest slot first within a round:
one tenant's pile of overdue schedules waits behind one firing of each other tenant's.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from longtask.core.errors import DomainError
from longtask.core.kinds import Registry, params_hash
from longtask.core.models import Created
from longtask.db import transaction
from longtask.service import cron
from longtask.service.deps import Deps
from longtask.service.params import items_of
from longtask.service.tasks import enqueue
from longtask.store import schedules as schedule_store
from longtask.store import tasks as task_store
from longtask.store.schedules import Schedule

log = logging.getLogger(__name__)

EVERY_SECONDS = 1.0  # how often due schedules are looked for: a firing is at most this late
MAX_PER_BEAT = 200  # schedules fired in one beat; the rest wait for the next


async def fire_due(deps: Deps, registry: Registry, limit: int = MAX_PER_BEAT) -> int:
    """Fire due schedules, up to `limit` of them, a round of one per tenant at a time; the
    number of tasks made."""
    made = 0
    served: set[str] = set()  # tenants that had a firing this round
    for _ in range(limit):
        fired = await _fire_next(deps, registry, served)
        if fired is None and served:
            served.clear()  # every tenant with a due schedule had its turn: the next round
            fired = await _fire_next(deps, registry, served)
        if fired is None:
            return made
        tenant, created = fired
        served.add(tenant)
        made += created
    return made


async def _fire_next(deps: Deps, registry: Registry,
                     served: set[str]) -> tuple[str, int] | None:
    """Fire the due schedule of a tenant not `served` yet whose slot came first: its tenant and
    the tasks made (0 or 1); None if there is none."""
    try:
        async with transaction(deps.pool) as conn:
            claimed = await schedule_store.claim_due(conn, deps.settings.queue_name, served)
            if claimed is None:
                return None
            schedule, now = claimed
            assert schedule.next_run_at is not None
            # the next slot after now, and no sooner than the shortest interval allows
            soonest = schedule.next_run_at + timedelta(
                seconds=deps.settings.min_schedule_seconds - 1)
            following = cron.next_after(schedule.cron, max(now, soonest))
            created, error = await _create(conn, deps, registry, schedule)
            task_id = created.task.id if created else None
            if not await schedule_store.advance(conn, schedule, following, task_id, error):
                raise _Moved  # not with the row lock held; but never fire twice regardless
    except _Moved:
        return schedule.tenant, 0
    if created is None:
        log.warning("schedule %s of %s made no task for %s: %s", schedule.id, schedule.tenant,
                    schedule.next_run_at, error)
        return schedule.tenant, 0
    await enqueue(deps, created.jobs)
    return schedule.tenant, 1


async def _create(conn: Any, deps: Deps, registry: Registry,
                  schedule: Schedule) -> tuple[Created | None, dict[str, Any] | None]:
    """The slot's task, in a savepoint of the claim's transaction; or why there is none (the
    kind is unknown to this worker, the params no longer fit it, the tenant is over its rate
    or its open-task cap, the queue is full)."""
    kind = registry.get(schedule.kind)
    if kind is None:
        return None, {"code": "unknown_kind",
                      "message": f"no worker here knows kind {schedule.kind!r}"}
    assert schedule.next_run_at is not None
    slot = schedule.next_run_at.isoformat()
    try:
        await _admit(deps, schedule.tenant)
        return await task_store.create(
            conn, tenant=schedule.tenant, kind=kind.name, params=schedule.params,
            items=items_of(kind, schedule.params), idempotency_key=f"schedule:{schedule.id}:{slot}",
            request_hash=params_hash(kind.name, schedule.params), run_at=schedule.next_run_at,
            schedule_id=schedule.id, max_open=deps.settings.max_open_tasks,
            queue=deps.settings.queue_name), None
    except DomainError as exc:
        return None, {"code": exc.code, "message": str(exc.detail)[:500]}
    except Exception as exc:  # a kind's own splitter may raise anything: one schedule that
        # cannot fire must not hold up the others (it is the first in line every beat)
        log.exception("schedule %s could not make its task", schedule.id)
        return None, {"code": "internal_error", "message": repr(exc)[:500]}


async def _admit(deps: Deps, tenant: str) -> None:
    """What a submit passes before its task is stored: the tenant's request rate, and room in
    its queue and the queue of all (the open-task cap is checked as the task is stored)."""
    if deps.admission is not None:
        await deps.admission.request(tenant)
        await deps.admission.room_in_queue(tenant)


class _Moved(Exception):
    """Another scheduler advanced the schedule first: roll this firing back."""
