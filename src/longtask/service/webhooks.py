"""The optional webhook (LONGTASK_WEBHOOK_URL): POSTed a task that ended with failures, so a
team hears of its dead letters without polling."""

from __future__ import annotations

import logging

import asyncpg
import httpx

from longtask.core.errors import JobError
from longtask.pipeline.http import check, transport_error, with_retries
from longtask.store import tasks as task_store

log = logging.getLogger(__name__)


async def task_ended(http: httpx.AsyncClient, url: str, pool: asyncpg.Pool, tenant: str,
                     task_id: str) -> None:
    task = await task_store.get(pool, tenant, task_id)
    body = {"event": "task.failed" if task.status == "failed" else "task.completed_with_failures",
            "tenant": tenant, "task": task.as_dict()}

    async def send() -> None:
        try:
            response = await http.post(url, json=body, timeout=10)
        except httpx.HTTPError as exc:
            raise transport_error(exc, "webhook") from exc
        check(response, "webhook")

    try:
        await with_retries(send, attempts=5)
    except JobError as exc:  # the task's outcome stands; the hook is best effort, and logged
        log.warning("webhook for task %s not delivered: %s", task_id, exc)
