"""task_items: claim under a lease, heartbeat, progress, checkpoint, retry and finish.

Every write of a running item is conditional on its lease (`lease_owner`), so a worker that lost
its lease (it stalled, the reaper gave the item to another) writes nothing more.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from longtask.core.events import Event
from longtask.core.models import (
    Claim,
    Finished,
    PendingJob,
    Report,
    item_job_id,
    item_of_job,
)
from longtask.core.status import ACTIVE_SQL
from longtask.store import events

_LEASE = "now() + make_interval(secs => $3)"

async def claim(pool: asyncpg.Pool, item_id: str, job_id: str, owner: str,
                lease_seconds: float) -> Claim | None:
    """Take a pending item for this job; None if another job owns it or it is not pending."""
    got = await pool.fetchval("SELECT longtask_claim_v2($1, $2, $3, $4)",  # migration 0010
                              item_id, job_id, owner, lease_seconds)
    if got is None:
        return None
    task_id = got["task_id"]
    return Claim(
        item_id=item_id, task_id=task_id, tenant=got["tenant"], kind=got["kind"],
        params=got["params"], index=got["idx"], name=got["name"], payload=got["payload"],
        checkpoint=got["checkpoint"], attempt=got["attempts"], items_total=got["items_total"],
        events=_events(task_id, got["events"]),
    )


async def heartbeat(pool: asyncpg.Pool, item_id: str, owner: str,
                    lease_seconds: float) -> str | None:
    """Renew the lease; the task's status, or None if the lease is no longer ours."""
    status: str | None = await pool.fetchval(
        f"UPDATE task_items i SET lease_expires_at = {_LEASE}, updated_at = now()"
        " FROM tasks t WHERE i.id = $1 AND i.lease_owner = $2 AND i.status = 'running'"
        " AND t.id = i.task_id RETURNING t.status",
        item_id, owner, lease_seconds,
    )
    return status


async def progress(pool: asyncpg.Pool, reports: list[Report]) -> list[Event | None]:
    """Record items' progress and their tasks' overall percent, an event for each report, in one
    call (migration 0010); None for a report whose lease is no longer its owner's. Sort the
    reports by task first: two calls then lock their tasks in the same order."""
    stored = await pool.fetchval(
        "SELECT longtask_progress_v2($1, $2, $3, $4, $5, $6)",
        [r.item_id for r in reports], [r.owner for r in reports],
        [r.percent for r in reports], [r.stage for r in reports],
        [r.message for r in reports], [r.data for r in reports])
    return [events.stored_event(e["task_id"], e) if e else None for e in stored]


async def save_checkpoint(pool: asyncpg.Pool, item_id: str, owner: str,
                          values: dict[str, Any]) -> bool:
    """Merge `values` into the item's checkpoint; False if the lease is no longer ours."""
    done = await pool.fetchval(
        "UPDATE task_items SET checkpoint = checkpoint || $3, updated_at = now()"
        " WHERE id = $1 AND lease_owner = $2 AND status = 'running' RETURNING 1",
        item_id, owner, values,
    )
    return done is not None


async def save_stream(pool: asyncpg.Pool, item_id: str, owner: str,
                      stream: dict[str, Any] | None) -> bool:
    """Keep the text an item's LLM call has streamed so far; False if the lease is not ours."""
    done = await pool.fetchval(
        "UPDATE task_items SET stream = $3 WHERE id = $1 AND lease_owner = $2"
        " AND status = 'running' RETURNING 1", item_id, owner, stream)
    return done is not None


async def retry_later(pool: asyncpg.Pool, item_id: str, owner: str, attempt: int, delay: float,
                      error: dict[str, Any]) -> tuple[PendingJob, Event | None] | None:
    """Put a running item back to pending under the next attempt's job id, to start after
    `delay`. None if the lease is no longer ours."""
    return await _requeue(pool, item_id, owner, attempt, delay, error, expired_only=False)


async def _requeue(pool: asyncpg.Pool, item_id: str, owner: str, attempt: int, delay: float,
                   error: dict[str, Any], *,
                   expired_only: bool) -> tuple[PendingJob, Event | None] | None:
    row = await pool.fetchrow(_REQUEUE, item_id, owner, error, delay,
                              item_job_id(item_id, attempt + 1), expired_only)
    if row is None:
        return None
    event = events.stored_event(str(row["task_id"]), row["event"]) if row["event"] else None
    return PendingJob(item_id, row["job_id"], row["run_after"], row["attempts"] + 1,
                      tenant=row["tenant"], kind=row["kind"]), event


# The item back to pending and its `retrying` event (the task's next sequence number) in one
# statement, not a transaction of two: a worker that froze between them held the item's row, and
# from the second one the task's, which every claim, progress report and finish of the task
# locks; with no limit when it froze between asyncpg's prepare and bind of the second. One
# statement runs and commits on the server once sent, whatever becomes of the client. The item
# is locked before its task, as before.
_REQUEUE = f"""
WITH item AS (
    UPDATE task_items SET status = 'pending', error = $3, lease_owner = NULL,
        lease_expires_at = NULL, run_after = now() + make_interval(secs => $4), job_id = $5,
        updated_at = now()
    WHERE id = $1 AND lease_owner = $2 AND status = 'running'
    AND (NOT $6 OR lease_expires_at < now())
    RETURNING task_id, idx, name, attempts, job_id, run_after, tenant
), task AS (
    UPDATE tasks t SET last_seq = t.last_seq + 1, updated_at = now()
    FROM item WHERE t.id = item.task_id AND t.status IN {ACTIVE_SQL}
    RETURNING t.id, t.tenant, t.last_seq
), event AS (
    INSERT INTO task_events (task_id, seq, tenant, type, data)
    SELECT task.id, task.last_seq, task.tenant, 'item', jsonb_build_object(
        'item', item.idx, 'name', item.name, 'status', 'retrying', 'attempt', item.attempts,
        'error', $3::jsonb, 'retry_in', $4::float8)
    FROM task, item
    RETURNING seq, type, data, created_at
)
SELECT item.task_id, item.attempts, item.job_id, item.run_after, item.tenant,
    (SELECT kind FROM tasks WHERE id = item.task_id) AS kind,
    (SELECT jsonb_build_object('seq', seq, 'type', type, 'data', data, 'at', created_at)
     FROM event) AS event
FROM item
"""


async def finish(pool: asyncpg.Pool, item_id: str, owner: str, status: str, *,
                 result: Any = None, error: dict[str, Any] | None = None) -> Finished | None:
    """End a running item; if it was the task's last, end the task too. None: lease lost."""
    got = await pool.fetchval("SELECT longtask_finish_v2($1, $2, $3, $4, $5)",  # migration 0010
                              item_id, owner, status, result, error)
    if got is None:
        return None
    return Finished(_events(got["task_id"], got["events"]), got["task_status"],
                    got["items_failed"])


@dataclass(frozen=True)
class Expired:
    """What the reaper did: the items' new jobs, their events, and the job ids they left behind
    (each held a dispatch slot that its dead worker never gave back)."""

    jobs: list[PendingJob]
    events: list[Event]
    retired: list[str]


async def expire_leases(pool: asyncpg.Pool, max_attempts: int, queue: str,
                        limit: int = 500) -> Expired:
    """Hand items whose worker stopped heartbeating to the queue again, each under its next
    attempt's job id; an item that has used up its attempts this way fails as `crashed`."""
    # two reapers may read the same rows: the conditional writes below let only one act
    rows = await pool.fetch(
        "SELECT i.id, i.attempts, i.lease_owner, i.job_id FROM task_items i"
        " JOIN tasks t ON t.id = i.task_id AND t.queue = $2"
        " WHERE i.status = 'running' AND i.lease_expires_at < now()"
        " ORDER BY i.lease_expires_at LIMIT $1", limit, queue)
    done = Expired([], [], [])
    for row in rows:
        item_id = str(row["id"])
        error = {"code": "lease_expired",
                 "message": f"worker {row['lease_owner']} stopped heartbeating"}
        if row["attempts"] >= max_attempts:
            ended = await finish(pool, item_id, row["lease_owner"], "failed", error={
                "code": "crashed", "message": f"its worker died {row['attempts']} times"})
            if ended is not None:
                done.events.extend(ended.events)
                done.retired.append(row["job_id"])
            continue
        requeued = await _requeue(pool, item_id, row["lease_owner"], row["attempts"], 0.0,
                                  error, expired_only=True)
        if requeued is not None:
            done.jobs.append(requeued[0])
            done.events.extend([requeued[1]] if requeued[1] else [])
            done.retired.append(row["job_id"])
    return done


async def pending_jobs(pool: asyncpg.Pool, older_than_seconds: float, horizon_seconds: float,
                       queue: str, limit: int = 1000) -> list[PendingJob]:
    """Pending items of live tasks that have waited a while: the reconciler re-enqueues them.
    Items deferred past the horizon are left out: Postgres holds them, and they come back here
    before their time (so thousands of far-off deferred tasks never crowd out lost jobs)."""
    rows = await pool.fetch(
        "SELECT i.id, i.job_id, i.run_after, i.attempts, t.tenant, t.kind FROM task_items i"
        " JOIN tasks t ON t.id = i.task_id AND t.queue = $4"
        f" WHERE i.status = 'pending' AND t.status IN {ACTIVE_SQL}"
        " AND i.updated_at < now() - make_interval(secs => $1)"
        " AND (i.run_after IS NULL OR i.run_after < now() + make_interval(secs => $3))"
        " ORDER BY i.created_at LIMIT $2",
        older_than_seconds, limit, horizon_seconds, queue,
    )
    return [PendingJob(str(r["id"]), r["job_id"], r["run_after"], r["attempts"] + 1,
                       tenant=r["tenant"], kind=r["kind"]) for r in rows]


async def retake(pool: asyncpg.Pool, jobs: list[PendingJob]) -> list[PendingJob]:
    """Give pending items a new job id for the same attempt: their job was taken by a worker
    that never claimed them (it died or froze first), and ARQ holds that id for job_timeout."""
    rows = await pool.fetch(
        "UPDATE task_items i SET job_id = u.new_id, updated_at = now()"
        " FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, old_id, new_id)"
        " WHERE i.id = u.id AND i.job_id = u.old_id AND i.status = 'pending'"
        " RETURNING i.id, i.job_id, i.run_after",
        [j.item_id for j in jobs], [j.job_id for j in jobs],
        [item_job_id(j.item_id, j.attempt, uuid.uuid4().hex[:8]) for j in jobs])
    before = {job.item_id: job for job in jobs}
    return [replace(before[str(r["id"])], job_id=r["job_id"], run_after=r["run_after"])
            for r in rows]


async def ended_jobs(pool: asyncpg.Pool, job_ids: list[str]) -> list[str]:
    """Of these item job ids, those whose run is over for good: the item has ended, was
    deleted, or waits for or runs under another job id now (a retry, the reaper, a retake).
    Job ids are never reused, so what this answers stays true."""
    pairs = [(item, job) for job in job_ids if (item := item_of_job(job)) is not None]
    if not pairs:
        return []
    rows = await pool.fetch(
        "SELECT u.job_id FROM unnest($1::uuid[], $2::text[]) AS u(item_id, job_id)"
        " LEFT JOIN task_items i ON i.id = u.item_id"
        f" WHERE i.id IS NULL OR i.job_id <> u.job_id OR i.status NOT IN {ACTIVE_SQL}",
        [item for item, _ in pairs], [job for _, job in pairs])
    return [r["job_id"] for r in rows]


async def list_for_task(pool: asyncpg.Pool, tenant: str, task_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT idx AS index, id, name, status, round(progress::numeric, 2)::float AS progress,"
        " stage, message, attempts, error, result, started_at, finished_at"
        " FROM task_items WHERE task_id = $1 AND tenant = $2 ORDER BY idx",
        task_id, tenant,
    )
    out = []
    for r in rows:
        d = dict(r)
        d["id"] = str(d["id"])
        for key in ("started_at", "finished_at"):
            d[key] = d[key].isoformat() if d[key] else None
        out.append(d)
    return out


def _events(task_id: str, stored: list[dict[str, Any]]) -> list[Event]:
    return [events.stored_event(task_id, e) for e in stored]
