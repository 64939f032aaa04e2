"""Run one item: claim it under a lease, heartbeat, run the kind's function, map the outcome.

    completed  the function returned (its value, JSON-able, is the item's result)
    failed     PermanentError, a soft timeout, an unknown kind, or any other exception
    retrying   TransientError while retries are left: pending again under a fresh job id
    canceled   the task was canceled: the kind's on_cancel cleans up partial output
    (nothing)  the lease was lost: another worker owns the item now, so this run writes nothing
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

from longtask.core.errors import JobCanceled, JobError, PermanentError, TransientError
from longtask.core.kinds import Kind, Registry
from longtask.core.status import TERMINAL
from longtask.obs import logs
from longtask.pipeline import http as provider_calls
from longtask.service import items as items_service
from longtask.service.outages import DEPENDENCY_ERRORS
from longtask.store import items as item_store
from longtask.worker.context import RunContext, Services

log = logging.getLogger(__name__)

_HARD_LIMIT_SLACK = 1.0  # seconds: a run cancelled this close to job_timeout hit the hard limit


class Running:
    """The items this worker process runs now, so a cancel notice can reach them."""

    def __init__(self) -> None:
        self._by_task: dict[str, set[tuple[RunContext, asyncio.Task[Any]]]] = {}

    def add(self, ctx: RunContext, task: asyncio.Task[Any]) -> None:
        self._by_task.setdefault(ctx.task_id, set()).add((ctx, task))

    def remove(self, ctx: RunContext, task: asyncio.Task[Any]) -> None:
        entries = self._by_task.get(ctx.task_id)
        if entries is not None:
            entries.discard((ctx, task))
            if not entries:
                del self._by_task[ctx.task_id]

    def cancel_task(self, task_id: str, reason: str) -> int:
        entries = self._by_task.get(task_id, set())
        for ctx, task in entries:
            stop(ctx, task, reason)
        return len(entries)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_task.values())


def stop(ctx: RunContext, task: asyncio.Task[Any], reason: str) -> None:
    """Flag the item and interrupt its function at its next await (in-flight HTTP included)."""
    if not ctx.canceled:
        ctx.cancel(reason)
        task.cancel()


async def run_item(services: Services, registry: Registry, running: Running, item_id: str,
                   job_id: str) -> str:
    """Run one ARQ job; returns what happened, for ARQ's log."""
    owner = services.worker_id
    claim = await items_service.claim(services.deps, item_id, job_id, owner)
    if claim is None:
        return "skipped: not pending for this job"
    services.notices.claimed(job_id)
    ctx = RunContext(claim, services)
    outcome = "interrupted: the worker stopped it"  # unless _run returns
    started = time.monotonic()
    observed = provider_calls.observer.set(services.metrics)
    try:
        # the item's own task (made in _run) inherits the ids and the observer
        with logs.context(task_id=ctx.task_id, item_id=ctx.item_id):
            outcome = await _run(services, registry, running, ctx)
        return outcome
    finally:
        provider_calls.observer.reset(observed)
        seconds = time.monotonic() - started
        services.metrics.item_done(claim.kind, outcome.split(":")[0].split()[0], seconds)
        ctx.log.info("item %s of task %s: %s (%.3fs)", ctx.item_id, ctx.task_id, outcome, seconds)


async def _run(services: Services, registry: Registry, running: Running, ctx: RunContext) -> str:
    item_id = ctx.item_id
    kind = registry.get(ctx.kind)
    if kind is None:
        return await _finish(ctx, "failed", error=PermanentError(
            f"no job kind {ctx.kind!r} on this worker", code="unknown_kind").as_dict())

    work = asyncio.create_task(_call(kind, ctx, ctx.payload), name=f"item:{item_id}")
    running.add(ctx, work)
    beat = asyncio.create_task(_heartbeat(ctx, work, services), name=f"heartbeat:{item_id}")
    started = time.monotonic()
    try:
        result = await asyncio.shield(work)
    except asyncio.CancelledError:
        if not work.done():
            # this job was cancelled from outside: stop the function, then either it hit ARQ's
            # hard limit (it would again: fail it), or the worker is stopping (hand it back at
            # once, to resume from its checkpoint on any worker)
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            hard = services.settings.job_timeout
            if time.monotonic() - started >= hard - _HARD_LIMIT_SLACK:
                await asyncio.shield(_finish(ctx, "failed", error={
                    "code": "timeout", "message": f"stopped at the hard limit of "
                    f"{hard:g}s (LONGTASK_JOB_TIMEOUT)"}))
            else:
                await asyncio.shield(_release(ctx))
            raise
        return await _stopped(kind, ctx)  # our own stop(): a cancel or a lost lease
    except JobCanceled:
        return await _stopped(kind, ctx)
    except TransientError as exc:
        return await _transient(ctx, exc)
    except JobError as exc:
        return await _finish(ctx, "failed", error=exc.as_dict())
    except DEPENDENCY_ERRORS as exc:
        # Postgres or Redis went away under the item: not its fault, so it runs again (handed
        # back now if we can, else when its lease runs out)
        ctx.log.warning("item %s interrupted by an outage: %r", item_id, exc)
        await asyncio.shield(_release(ctx))
        return "interrupted: a backing service was unavailable"
    except Exception as exc:
        ctx.log.exception("item %s failed with an unexpected error", item_id)
        return await _finish(ctx, "failed", error={
            "code": "internal_error", "message": f"{type(exc).__name__}: {exc}"[:500]})
    else:
        return await _finish(ctx, "completed", result=result)
    finally:
        running.remove(ctx, work)
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat


async def _call(kind: Kind, ctx: RunContext, payload: Any) -> Any:
    """The kind's function under the soft timeout; past it, the kind cleans up as for a cancel
    and the item fails as `timeout`."""
    # a kind's own limit, but never past the hard one: the soft limit is the one that cleans up
    limit = min(kind.timeout or ctx.settings.item_timeout,
                ctx.settings.job_timeout - 2 * _HARD_LIMIT_SLACK)
    deadline = asyncio.timeout(limit)
    try:
        async with deadline:
            return await kind.handler(ctx, payload)
    except TimeoutError:
        if not deadline.expired():  # not ours: asyncpg's command_timeout, a kind's own limit
            raise
        if kind.on_cancel is not None:
            await kind.on_cancel(ctx, payload)
        raise PermanentError(f"took longer than {limit:g}s", code="timeout") from None


async def _heartbeat(ctx: RunContext, work: asyncio.Task[Any], services: Services) -> None:
    """Renew the lease; stop the item if the task was canceled or the lease was lost."""
    settings = services.settings
    while not work.done():
        await asyncio.sleep(settings.heartbeat_seconds)
        try:
            status = await item_store.heartbeat(services.pool, ctx.item_id, services.worker_id,
                                                settings.lease_seconds)
        except Exception as exc:  # Postgres away: keep working, the lease says how long we may
            ctx.log.warning("heartbeat failed: %s", exc)
            continue
        if status is None:
            stop(ctx, work, "lease_lost")
        elif status in TERMINAL:  # canceled, or failed past its deadline
            stop(ctx, work, "canceled")


async def _stopped(kind: Kind, ctx: RunContext) -> str:
    if ctx.cancel_reason == "lease_lost":
        return "abandoned: lease lost"  # another worker owns the item: write nothing
    if kind.on_cancel is not None:
        try:
            await kind.on_cancel(ctx, ctx.payload)
        except Exception:
            ctx.log.exception("on_cancel of item %s failed", ctx.item_id)
    return await _finish(ctx, "canceled",
                         error={"code": "canceled", "message": "the task was canceled"})


async def _transient(ctx: RunContext, exc: TransientError) -> str:
    settings = ctx.settings
    if ctx.attempt > settings.max_retries:
        return await _finish(ctx, "failed", error={
            "code": exc.code, "message": f"{exc.message} (gave up after {ctx.attempt} attempts)"})
    jittered = settings.retry_delay(ctx.attempt) * random.uniform(0.8, 1.2)
    delay = max(jittered, exc.retry_after or 0.0)
    if not await items_service.run_again(ctx.deps, ctx.item_id, ctx.worker_id, ctx.attempt,
                                         delay, exc.as_dict()):
        return "abandoned: lease lost"
    return f"retrying in {delay:g}s: {exc.code}"


async def _release(ctx: RunContext) -> None:
    error = {"code": "interrupted", "message": "its worker stopped (shutdown or hard timeout)"}
    try:
        await items_service.run_again(ctx.deps, ctx.item_id, ctx.worker_id, ctx.attempt, 0.0,
                                      error)
    except Exception as exc:  # the lease will expire and the reaper hands it on instead
        ctx.log.warning("could not hand item %s back: %s", ctx.item_id, exc)


async def _finish(ctx: RunContext, status: str, *, result: Any = None,
                  error: dict[str, Any] | None = None) -> str:
    """End the item, if its lease is still ours; what happened, for ARQ's log."""
    finished = await asyncio.shield(items_service.finish(
        ctx.deps, ctx.item_id, ctx.worker_id, status, result=result, error=error))
    if finished is None:
        return "abandoned: lease lost"  # another run owns the item now; it wrote nothing here
    return f"{status}: {error['code']}" if error else status
