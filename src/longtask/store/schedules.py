"""schedules: recurring tasks. Create, read, list, pause, resume, delete, and the scheduler's
claim of a due schedule (FOR UPDATE SKIP LOCKED) and its advance past the slot it fired."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import asyncpg

from longtask.core.errors import LimitReached, NotFound
from longtask.db import Conn, Db, returned, transaction


@dataclass(frozen=True)
class Schedule:
    id: str
    tenant: str
    kind: str
    params: Any
    cron: str
    paused: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_task_id: str | None
    last_error: dict[str, Any] | None
    fired: int
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "tenant"}
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


_COLUMNS = ", ".join(f.name for f in fields(Schedule))
NextRun = Callable[[str, datetime], datetime]  # (cron, after) -> the first firing after it


async def create(pool: asyncpg.Pool, *, tenant: str, kind: str, params: Any, cron: str,
                 next_run: NextRun, max_per_tenant: int, queue: str) -> Schedule:
    """A new schedule, first firing at the cron's next slot (by the workers of `queue`);
    LimitReached past the cap."""
    async with transaction(pool) as conn:
        # one tenant's creates queue here, so two at once cannot both pass the count
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('schedules:' || $1))", tenant)
        count = await conn.fetchval("SELECT count(*) FROM schedules WHERE tenant = $1", tenant)
        if count >= max_per_tenant:
            raise LimitReached(f"this tenant has {count} schedules, its limit; delete some",
                               code="too_many_schedules")
        now = await conn.fetchval("SELECT now()")
        row = await conn.fetchrow(
            f"INSERT INTO schedules (tenant, kind, params, cron, next_run_at, queue)"
            f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
            tenant, kind, params, cron, next_run(cron, now), queue)
    return _schedule(returned(row))


async def get(pool: Db, tenant: str, ident: str,
              lock: bool = False) -> Schedule:
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM schedules WHERE id = $1 AND tenant = $2"
        + (" FOR UPDATE" if lock else ""), ident, tenant)
    if row is None:
        raise NotFound(f"no schedule {ident}")
    return _schedule(returned(row))


async def list_page(pool: asyncpg.Pool, tenant: str, *, limit: int,
                    before: tuple[datetime, str] | None) -> list[Schedule]:
    """Newest first; `before` is the (created_at, id) of the last one of the previous page."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM schedules WHERE tenant = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))"
        " ORDER BY created_at DESC, id DESC LIMIT $4",
        tenant, before[0] if before else None, before[1] if before else None, limit)
    return [_schedule(r) for r in rows]


async def set_paused(pool: asyncpg.Pool, tenant: str, ident: str, paused: bool,
                     next_run: NextRun) -> Schedule:
    """Pause (no next firing), or resume from now: slots missed while paused do not fire."""
    async with transaction(pool) as conn:
        schedule = await get(conn, tenant, ident, lock=True)
        if schedule.paused == paused:
            return schedule
        now = await conn.fetchval("SELECT now()")
        row = await conn.fetchrow(
            f"UPDATE schedules SET paused = $2, next_run_at = $3, updated_at = now()"
            f" WHERE id = $1 RETURNING {_COLUMNS}",
            ident, paused, None if paused else next_run(schedule.cron, now))
    return _schedule(returned(row))


async def delete(pool: asyncpg.Pool, tenant: str, ident: str) -> None:
    """Delete a schedule; the tasks it made stay (their schedule_id becomes null)."""
    if await pool.fetchval("DELETE FROM schedules WHERE id = $1 AND tenant = $2 RETURNING id",
                           ident, tenant) is None:
        raise NotFound(f"no schedule {ident}")


async def claim_due(conn: Conn, queue: str,
                    skip: Collection[str] = ()) -> tuple[Schedule, datetime] | None:
    """The schedule of `queue` whose slot came first, of a tenant not in `skip`, locked for
    this transaction (another scheduler skips it), and the transaction's time; None if none is
    due."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS}, now() AS now FROM schedules WHERE queue = $1 AND NOT paused"
        " AND next_run_at <= now() AND tenant <> ALL($2::text[])"
        " ORDER BY next_run_at LIMIT 1 FOR UPDATE SKIP LOCKED", queue, list(skip))
    return (_schedule(row), row["now"]) if row else None


async def advance(conn: Conn, schedule: Schedule, following: datetime,
                  task_id: str | None, error: dict[str, Any] | None) -> bool:
    """Record that the slot `schedule.next_run_at` fired (or why it made no task) and move on to
    `following`; False if another scheduler moved it first (the caller rolls back)."""
    done = await conn.fetchval(
        "UPDATE schedules SET next_run_at = $3, last_run_at = $2, last_task_id = $4,"
        " last_error = $5, fired = fired + $6, updated_at = now()"
        " WHERE id = $1 AND next_run_at = $2 AND NOT paused RETURNING id",
        schedule.id, schedule.next_run_at, following, task_id, error, 1 if task_id else 0)
    return done is not None


def _schedule(row: asyncpg.Record) -> Schedule:
    values = {f.name: row[f.name] for f in fields(Schedule)}
    values["id"] = str(values["id"])
    values["last_task_id"] = str(values["last_task_id"]) if values["last_task_id"] else None
    return Schedule(**values)
