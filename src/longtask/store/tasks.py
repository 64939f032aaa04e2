"""tasks: create (with items and first event, in one transaction), read, list, cancel, delete."""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

import asyncpg

from longtask.config import DEFAULT_QUEUE
from longtask.core.errors import Conflict, LimitReached, NotFound
from longtask.core.events import Event
from longtask.core.models import Canceled, Created, NewItem, PendingJob, Task, item_job_id
from longtask.core.status import ACTIVE_SQL, TERMINAL_SQL
from longtask.db import Db, returned, transaction

OPEN_TASKS_RETRY_AFTER = 5  # seconds: a tenant at its limit waits for some tasks to end


_COLUMNS = ", ".join(f.name for f in fields(Task))


# The tenant's open tasks, counted up to `limit` only: a busy tenant costs no more than that.
_OPEN_TASKS = ("SELECT count(*) FROM (SELECT 1 FROM tasks WHERE tenant = $1"
               f" AND status IN {ACTIVE_SQL} LIMIT {{limit}}) AS open")

# A submit in one statement (one round trip, its own transaction): the open-task check, the
# task, its items (the enqueue intent) and its first event. No task row back means the tenant
# had no room ($12) or the Idempotency-Key was used before (ON CONFLICT); `create` tells which.
_CREATE = f"""
WITH room AS (
    SELECT $12::int IS NULL OR ({_OPEN_TASKS.format(limit="$12")}) < $12 AS ok
), t AS (
    INSERT INTO tasks (tenant, kind, params, items_total, idempotency_key, request_hash,
        last_seq, retry_of, run_at, deadline_at, schedule_id, queue)
    SELECT $1, $2, $3, cardinality($13::uuid[]), $4, $5, 1, $6, $8,
        coalesce($8, now()) + make_interval(secs => $7), $9, $10 FROM room WHERE room.ok
    ON CONFLICT (tenant, idempotency_key) DO NOTHING
    RETURNING {_COLUMNS}
), i AS (
    INSERT INTO task_items (id, task_id, tenant, idx, name, payload, job_id, run_after)
    SELECT u.id, t.id, t.tenant, u.idx - 1, u.name, u.payload, u.job_id, t.run_at
    FROM t, unnest($13::uuid[], $14::text[], $15::jsonb[], $16::text[])
        WITH ORDINALITY AS u(id, name, payload, job_id, idx)
), e AS (
    INSERT INTO task_events (task_id, seq, tenant, type, data)
    SELECT t.id, 1, t.tenant, 'status', $11 FROM t
)
SELECT room.ok AS room, t.* FROM room LEFT JOIN t ON true
"""


async def create(
    db: Db,
    *,
    tenant: str,
    kind: str,
    params: Any,
    items: list[NewItem],
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    retry_of: str | None = None,
    deadline_seconds: float | None = None,
    max_open: int | None = None,
    run_at: datetime | None = None,
    schedule_id: str | None = None,
    queue: str = DEFAULT_QUEUE,
    savepoint: bool = True,
) -> Created:
    """Store a task, its items (the enqueue intent) and its first event together; with
    `max_open`, only while the tenant has fewer open tasks than that (else LimitReached).
    With `run_at` it stays pending until then (its deadline counts from then). Given a
    connection, it all happens in a savepoint of the caller's transaction; with
    `savepoint=False`, straight in it (two round trips fewer; a database error then fails the
    caller's transaction: db.group runs each write alone again)."""
    item_ids = [str(uuid.uuid4()) for _ in items]
    job_ids = [item_job_id(item_id, 1) for item_id in item_ids]
    first: dict[str, Any] = {"status": "pending", "items_total": len(items)}
    if run_at is not None:
        first["run_at"] = run_at.astimezone(timezone.utc).isoformat()
    in_savepoint = transaction(db) if savepoint and isinstance(db, asyncpg.Connection) \
        else nullcontext(db)
    async with in_savepoint as conn:
        row = returned(await conn.fetchrow(
            _CREATE, tenant, kind, params, idempotency_key, request_hash, retry_of,
            deadline_seconds, run_at, schedule_id, queue, first, max_open, item_ids,
            [i.name for i in items], [i.payload for i in items], job_ids))
        if row["id"] is None:
            if idempotency_key is not None:  # a replay is never refused for want of room
                replay = await _replay(conn, tenant, idempotency_key, request_hash)
                if replay is not None:
                    return replay
            if not row["room"]:
                raise _no_room(max_open)
            raise Conflict("the task made with this Idempotency-Key was deleted",
                           code="idempotency")
    jobs = [PendingJob(i, j, run_at, tenant=tenant, kind=kind) for i, j in zip(item_ids, job_ids)]
    return Created(_task(row), jobs, replayed=False)


async def ensure_room(pool: asyncpg.Pool, tenant: str, max_open: int) -> None:
    """LimitReached if the tenant has `max_open` open (pending or running) tasks already."""
    count = await pool.fetchval(_OPEN_TASKS.format(limit="$2"), tenant, max_open)
    if count >= max_open:
        raise _no_room(max_open)


def _no_room(max_open: int | None) -> LimitReached:
    return LimitReached(
        f"this tenant has {max_open} tasks pending or running, its limit; wait for some to end "
        "or cancel them", code="too_many_open_tasks",
        retry_after=OPEN_TASKS_RETRY_AFTER)


async def get(pool: Db, tenant: str, task_id: str) -> Task:
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM tasks WHERE id = $1 AND tenant = $2", task_id, tenant
    )
    if row is None:
        raise NotFound(f"no task {task_id}")
    return _task(row)


async def list_page(
    pool: asyncpg.Pool,
    tenant: str,
    *,
    status: str | None,
    kind: str | None,
    limit: int,
    before: tuple[datetime, str] | None,
    schedule_id: str | None = None,
) -> list[Task]:
    """Newest first; `before` is the (created_at, id) of the last task of the previous page."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM tasks WHERE tenant = $1"
        " AND ($2::text IS NULL OR status = $2"
        "      OR ($2 = 'failed' AND status = 'completed' AND items_failed > 0))"
        " AND ($3::text IS NULL OR kind = $3)"
        " AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))"
        " AND ($7::uuid IS NULL OR schedule_id = $7)"
        " ORDER BY created_at DESC, id DESC LIMIT $6",
        tenant, status, kind, before[0] if before else None, before[1] if before else None, limit,
        schedule_id,
    )
    return [_task(r) for r in rows]


async def cancel(pool: asyncpg.Pool, tenant: str, task_id: str) -> Canceled:
    """End a task as canceled; its items not yet started never start.

    Idempotent for a canceled task; a task that ended otherwise is a Conflict.
    """
    rows = await pool.fetch(_END_CANCELED, None, task_id, tenant)
    if rows:
        return _ended(rows[0])
    task = await get(pool, tenant, task_id)
    if task.status == "canceled":
        return Canceled(task, [])
    raise Conflict(f"task {task_id} has already {task.status}", code="task_finished")


async def failed_items(pool: asyncpg.Pool, tenant: str, task_id: str) -> tuple[Task, list[NewItem]]:
    """A task that ended, and the items of it that failed, to run again as a new task."""
    task = await get(pool, tenant, task_id)
    if not task.terminal:
        raise Conflict(f"task {task_id} is {task.status}: it has not ended", code="task_active")
    rows = await pool.fetch(
        "SELECT name, payload FROM task_items WHERE task_id = $1 AND tenant = $2"
        " AND status = 'failed' ORDER BY idx", task_id, tenant)
    if not rows:
        raise Conflict(f"task {task_id} has no failed items", code="nothing_to_retry")
    return task, [NewItem(r["payload"], r["name"]) for r in rows]


async def expire_deadlines(pool: asyncpg.Pool, queue: str) -> list[Canceled]:
    """End the tasks of `queue` past their deadline as failed (`deadline_exceeded`); their
    items stop. Another queue's are its own deployment's: its reaper withdraws their items
    from its own tenants' lines."""
    return [_ended(row) for row in await pool.fetch(_END_LATE, _DEADLINE_ERROR, queue)]


def _ended(row: asyncpg.Record) -> Canceled:
    event = Event(str(row["id"]), row["event_seq"], "status", row["event_data"], row["event_at"])
    return Canceled(_task(row), [event], list(row["withdrawn"]))


# Ending tasks, with their event and their pending items, is one statement, not a transaction
# of several: a web process or reaper that froze in between held the rows of the tasks it was
# ending, which every claim, progress report and finish of those tasks locks. One statement
# runs and commits on the server once sent, whatever becomes of the client. Each task is
# locked before its items (the order claims take), the tasks in id order. Each row: the ended
# task, its status event, and the job ids of its items that never started. $1: the error, or
# NULL (an item's or task's own error then stays).
_END_TASKS = f"""
WITH target AS (
    SELECT id FROM tasks WHERE {{where}} AND status IN {ACTIVE_SQL} ORDER BY id FOR UPDATE
), skipped AS (
    UPDATE task_items i SET status = 'canceled', progress = 100, finished_at = now(),
        updated_at = now(), error = coalesce($1, i.error)
    FROM target WHERE i.task_id = target.id AND i.status = 'pending'
    RETURNING i.task_id, i.job_id
), ended AS (
    UPDATE tasks t SET status = '{{status}}', finished_at = now(), updated_at = now(),
        last_seq = t.last_seq + 1, error = coalesce($1, t.error),
        items_done = t.items_done + (SELECT count(*) FROM skipped WHERE skipped.task_id = t.id)
    FROM target WHERE t.id = target.id
    RETURNING t.*
), told AS (
    INSERT INTO task_events (task_id, seq, tenant, type, data)
    SELECT id, last_seq, tenant, 'status',
        jsonb_strip_nulls(jsonb_build_object('status', status, 'error', $1::jsonb))
    FROM ended
    RETURNING task_id, seq, data, created_at
)
SELECT ended.*, told.seq AS event_seq, told.data AS event_data, told.created_at AS event_at,
    ARRAY(SELECT job_id FROM skipped WHERE skipped.task_id = ended.id) AS withdrawn
FROM ended JOIN told ON told.task_id = ended.id
"""
_END_CANCELED = _END_TASKS.format(where="id = $2 AND tenant = $3", status="canceled")
_END_LATE = _END_TASKS.format(where="deadline_at < now() AND queue = $2", status="failed")

_DEADLINE_ERROR = {"code": "deadline_exceeded", "message": "the task ran past its deadline"}


async def delete(pool: asyncpg.Pool, tenant: str, task_id: str) -> None:
    """Delete a task that has ended, with its items and events."""
    deleted = await pool.fetchval(
        "DELETE FROM tasks WHERE id = $1 AND tenant = $2"
        f" AND status IN {TERMINAL_SQL} RETURNING id",
        task_id, tenant,
    )
    if deleted is None:
        task = await get(pool, tenant, task_id)  # NotFound if it is not there
        raise Conflict(f"task {task.id} is {task.status}: cancel it first", code="task_active")


async def purge_finished(pool: asyncpg.Pool, older_than_days: float, batch: int = 1000) -> int:
    """Delete tasks that ended more than `older_than_days` ago; the retention cron calls this."""
    return await purge_ended(pool, "tasks", older_than_days, batch)


async def purge_ended(pool: asyncpg.Pool, table: str, older_than_days: float,
                      batch: int = 1000) -> int:
    """Delete the rows of `table` (one of ours, with a `finished_at`) that ended more than
    `older_than_days` ago, `batch` rows per statement so no statement holds many locks."""
    total = 0
    while True:
        deleted: int = await pool.fetchval(
            f"WITH d AS (DELETE FROM {table} WHERE id IN (SELECT id FROM {table}"
            " WHERE finished_at < now() - make_interval(secs => $1) LIMIT $2) RETURNING 1)"
            " SELECT count(*) FROM d",
            older_than_days * 86400, batch,
        )
        total += deleted
        if deleted < batch:
            return total


async def counts(pool: asyncpg.Pool, tenant: str) -> list[tuple[str, str, int]]:
    """(kind, status, count) for every kind and status the tenant has."""
    rows = await pool.fetch(
        "SELECT kind, status, count(*) AS n FROM tasks WHERE tenant = $1"
        " GROUP BY kind, status ORDER BY kind, status",
        tenant,
    )
    return [(r["kind"], r["status"], r["n"]) for r in rows]


async def counts_all(pool: asyncpg.Pool) -> list[tuple[str, str, int]]:
    """(kind, status, count) over every tenant, for /metrics."""
    rows = await pool.fetch("SELECT kind, status, count(*) AS n FROM tasks GROUP BY kind, status")
    return [(r["kind"], r["status"], r["n"]) for r in rows]


async def _replay(conn: Db, tenant: str, key: str,
                  request_hash: str | None) -> Created | None:
    """The task an earlier request with this Idempotency-Key made; None if there is none."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS}, request_hash FROM tasks WHERE tenant = $1 AND idempotency_key = $2",
        tenant, key,
    )
    if row is None:
        return None
    if row["request_hash"] != request_hash:
        raise Conflict(
            "this Idempotency-Key was used for a different request", code="idempotency_key_reused"
        )
    return Created(_task(row), [], replayed=True)


def _task(row: asyncpg.Record) -> Task:
    values = {f.name: row[f.name] for f in fields(Task)}
    values["id"] = str(values["id"])
    for key in ("retry_of", "schedule_id"):
        values[key] = str(values[key]) if values[key] else None
    return Task(**values)
