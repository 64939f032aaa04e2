"""Use cases of one item's run, for the worker: claim it, end it, or hand it back to run again.
Each writes Postgres under the item's lease first, then sends the events and enqueues the job."""

from __future__ import annotations

from typing import Any

from longtask.core.models import Claim, Finished
from longtask.service.deps import Deps
from longtask.service.tasks import enqueue
from longtask.store import items as item_store


async def claim(deps: Deps, item_id: str, job_id: str, owner: str) -> Claim | None:
    """Take a pending item for this job under a lease; None if it is not pending for it."""
    claimed = await item_store.claim(deps.pool, item_id, job_id, owner,
                                     deps.settings.lease_seconds)
    if claimed is not None:
        deps.outbox.send(claimed.events)
    return claimed


async def finish(deps: Deps, item_id: str, owner: str, status: str, *, result: Any = None,
                 error: dict[str, Any] | None = None) -> Finished | None:
    """End a running item (and its task, if it was the last); None if the lease was lost."""
    finished = await item_store.finish(deps.pool, item_id, owner, status, result=result,
                                       error=error)
    if finished is not None:
        deps.outbox.send(finished.events)
    return finished


async def run_again(deps: Deps, item_id: str, owner: str, attempt: int, delay: float,
                    error: dict[str, Any]) -> bool:
    """Put a running item back to pending under its next attempt's job id, to start after
    `delay` seconds on any worker; False if the lease was lost."""
    retried = await item_store.retry_later(deps.pool, item_id, owner, attempt, delay, error)
    if retried is None:
        return False
    pending, event = retried
    deps.outbox.send([event] if event else [])
    await enqueue(deps, [pending])
    return True
