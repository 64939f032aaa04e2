"""webhook_deliveries: the outbox of task-end webhooks (migration 0012).

A trigger on tasks writes a row in the transaction that ends a task, for the queues registered
here; workers claim due rows, send them, and record each attempt. Every write after a claim is
conditional on the attempt it claimed, so a worker that took too long (its claim ran out and
another worker took the row) records nothing.
"""

from __future__ import annotations

import asyncpg

from longtask.core.models import WebhookDelivery
from longtask.store.tasks import purge_ended


async def register(pool: asyncpg.Pool, queue: str, enabled: bool) -> None:
    """Write outbox rows for the tasks of `queue` from now on, or stop writing them."""
    if enabled:
        await pool.execute(
            "INSERT INTO webhook_queues (queue) VALUES ($1)"
            " ON CONFLICT (queue) DO UPDATE SET updated_at = now()", queue)
    else:
        await pool.execute("DELETE FROM webhook_queues WHERE queue = $1", queue)


async def claim(pool: asyncpg.Pool, queue: str, limit: int,
                hold_seconds: float) -> list[WebhookDelivery]:
    """Take up to `limit` due deliveries of `queue` for one attempt each. They are not due again
    for `hold_seconds` (longer than an attempt takes): if this worker dies meanwhile, another one
    takes them then. Row locks of one statement only, so several workers never take one row,
    and a pooler in transaction mode is no trouble."""
    rows = await pool.fetch(
        "UPDATE webhook_deliveries d SET attempts = d.attempts + 1,"
        " next_attempt_at = now() + make_interval(secs => $3)"
        " FROM (SELECT id FROM webhook_deliveries WHERE queue = $1 AND status = 'pending'"
        "       AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT $2"
        "       FOR UPDATE SKIP LOCKED) due"
        " WHERE d.id = due.id"
        " RETURNING d.id, d.tenant, d.task_id, d.event, d.attempts, d.body, d.created_at",
        queue, limit, hold_seconds)
    return [WebhookDelivery(str(r["id"]), r["tenant"], str(r["task_id"]), r["event"],
                            r["attempts"], r["body"], r["created_at"]) for r in rows]


async def keep_body(pool: asyncpg.Pool, delivery: WebhookDelivery, body: str) -> str:
    """Store the body of the first attempt; every later attempt sends the same. Returns the
    body stored (another attempt's, if one stored it first)."""
    kept: str | None = await pool.fetchval(
        "UPDATE webhook_deliveries SET body = coalesce(body, $2) WHERE id = $1 RETURNING body",
        delivery.id, body)
    return body if kept is None else kept


async def delivered(pool: asyncpg.Pool, delivery: WebhookDelivery, status: int) -> bool:
    """The receiver took it; False if this attempt's claim ran out first."""
    return await _record(pool, delivery, "status = 'delivered', finished_at = now(),"
                         " last_status = $3, last_error = NULL", status)


async def retry_later(pool: asyncpg.Pool, delivery: WebhookDelivery, delay: float,
                      status: int | None, error: str) -> bool:
    """Due again in `delay` seconds; False if this attempt's claim ran out first."""
    return await _record(pool, delivery, "next_attempt_at = now() + make_interval(secs => $5),"
                         " last_status = $3, last_error = $4", status, error, delay)


async def give_up(pool: asyncpg.Pool, delivery: WebhookDelivery, status: int | None,
                  error: str) -> bool:
    """No more attempts; False if this attempt's claim ran out first."""
    return await _record(pool, delivery, "status = 'failed', finished_at = now(),"
                         " last_status = $3, last_error = $4", status, error)


async def purge(pool: asyncpg.Pool, older_than_days: float, batch: int = 1000) -> int:
    """Delete deliveries sent or given up more than `older_than_days` ago (the retention cron)."""
    return await purge_ended(pool, "webhook_deliveries", older_than_days, batch)


async def _record(pool: asyncpg.Pool, delivery: WebhookDelivery, assignments: str,
                  *args: object) -> bool:
    done = await pool.fetchval(
        f"UPDATE webhook_deliveries SET {assignments} WHERE id = $1 AND attempts = $2"
        " AND status = 'pending' RETURNING 1", delivery.id, delivery.attempt, *args)
    return done is not None
