"""The scheduler duty: fire due schedules, each slot once, as ordinary tasks.

Run by the workers' `_duty` loop (one worker per beat, through a Redis lock), but correct with
any number at once: a due schedule row is claimed FOR UPDATE SKIP LOCKED, and its task is created
in the same transaction that moves `next_run_at` past now, so a slot fires exactly once or (if
the transaction fails) not yet. After downtime the next slot is the first after *now*: the missed
ones fire once together, not once each. The task's idempotency key names the slot too.
"""

from __future__ import annotations

import logging
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


async def fire_due(deps: Deps, registry: Registry) -> int:
    """Fire every schedule whose slot has come; the number of tasks made."""
    made = 0
    for _ in range(MAX_PER_BEAT):
        try:
            async with transaction(deps.pool) as conn:
                claimed = await schedule_store.claim_due(conn, deps.settings.queue_name)
                if claimed is None:
                    return made
                schedule, now = claimed
                assert schedule.next_run_at is not None
                following = cron.next_after(schedule.cron, max(now, schedule.next_run_at))
                created, error = await _create(conn, deps, registry, schedule)
                task_id = created.task.id if created else None
                if not await schedule_store.advance(conn, schedule, following, task_id, error):
                    raise _Moved  # not with the row lock held; but never fire twice regardless
        except _Moved:
            continue
        if created is not None:
            made += 1
            await enqueue(deps, created.jobs)
        else:
            log.warning("schedule %s made no task for %s: %s", schedule.id,
                        schedule.next_run_at, error)
    return made


async def _create(conn: Any, deps: Deps, registry: Registry,
                  schedule: Schedule) -> tuple[Created | None, dict[str, Any] | None]:
    """The slot's task, in a savepoint of the claim's transaction; or why there is none (the
    kind is unknown to this worker, the params no longer fit it, the tenant is at its limit)."""
    kind = registry.get(schedule.kind)
    if kind is None:
        return None, {"code": "unknown_kind",
                      "message": f"no worker here knows kind {schedule.kind!r}"}
    assert schedule.next_run_at is not None
    slot = schedule.next_run_at.isoformat()
    try:
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


class _Moved(Exception):
    """Another scheduler advanced the schedule first: roll this firing back."""
