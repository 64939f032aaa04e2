"""Webhooks (LONGTASK_WEBHOOK_URL): a signed POST for each task that ends, sent from an outbox.

A trigger writes the outbox row in the transaction that ends the task (migration 0012), so a
process that dies loses no webhook, and no job slot waits on a receiver. `deliver`, a loop in
every worker, claims due rows, POSTs each with the Standard Webhooks headers (`webhook-id`, the
row's id, the same at every attempt; `webhook-timestamp`; `webhook-signature`), and tries again
what failed (a timeout, a connection error, any answer but a 2xx) after
LONGTASK_WEBHOOK_RETRY_DELAYS, with jitter, until LONGTASK_WEBHOOK_ATTEMPTS; then the row is
marked failed, logged and counted.

The body, the same at every attempt:
    {"type": "task.completed" | "task.failed" | "task.canceled",
     "timestamp": when the task ended, "data": {"tenant": ..., "task": {...}}}
`task` is the task as `GET /tasks/{id}` shows it, without its items and links.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Protocol

import httpx
from standardwebhooks import Webhook

from longtask.core.errors import NotFound
from longtask.core.events import format_at
from longtask.core.models import Task, WebhookDelivery
from longtask.pipeline.http import retry_after
from longtask.service.deps import Deps
from longtask.store import tasks as task_store
from longtask.store import webhooks as store

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often a worker looks for due deliveries
CONCURRENCY = 16  # deliveries one worker has in flight at most
CLAIM_SLACK = 30.0  # seconds a claim outlasts the attempt's timeout (then another worker may)
MAX_RETRY_AFTER = 3600.0  # a receiver's Retry-After is honoured up to this


class Observer(Protocol):
    """Hears of each attempt (the worker's metrics)."""

    def webhook_attempted(self, outcome: str, seconds: float) -> None: ...


class Signer:
    """The Standard Webhooks headers of a body: signed with each secret (several while one is
    being rotated: a receiver accepts any signature it can check)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._keys = [Webhook(secret) for secret in secrets]

    def headers(self, webhook_id: str, body: str, at: datetime | None = None) -> dict[str, str]:
        at = at or datetime.now(timezone.utc)
        return {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": " ".join(key.sign(webhook_id, at, body) for key in self._keys),
        }


async def register(deps: Deps) -> None:
    """From now on, tasks of this worker's queue that end get a webhook, if it has a URL; if
    not, they no longer do (what is in the outbox stays there)."""
    settings = deps.settings
    await store.register(deps.pool, settings.queue_name, bool(settings.webhook_url))


async def deliver(deps: Deps, observer: Observer | None = None) -> None:
    """Send this worker's share of the outbox until cancelled. Each delivery runs on its own, up
    to CONCURRENCY at once, so a receiver that hangs holds one of them for
    LONGTASK_WEBHOOK_TIMEOUT and nothing else; several workers never take the same row."""
    settings = deps.settings
    timeout = httpx.Timeout(settings.webhook_timeout)
    # a client of its own: hung receivers must not take the connections of LLM calls
    async with httpx.AsyncClient(timeout=timeout, headers={"user-agent": "longtask-webhooks"},
                                 limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
        await _Dispatcher(deps, client, observer).run()


def body(delivery: WebhookDelivery, task: Task | None) -> str:
    """What a delivery sends; `task` is None when it was deleted before its webhook went out."""
    if task is None:
        about = {"id": delivery.task_id, "status": delivery.event.removeprefix("task."),
                 "deleted": True}
        ended = delivery.created_at
    else:
        about = task.as_dict()
        ended = task.finished_at or delivery.created_at
    return json.dumps({"type": delivery.event, "timestamp": format_at(ended),
                       "data": {"tenant": delivery.tenant, "task": about}})


class _Dispatcher:
    def __init__(self, deps: Deps, client: httpx.AsyncClient, observer: Observer | None) -> None:
        settings = deps.settings
        if not settings.webhook_url:
            raise ValueError("webhooks need LONGTASK_WEBHOOK_URL")
        self._deps, self._client, self._observer = deps, client, observer
        self._url = settings.webhook_url
        self._signer = Signer(settings.webhook_secrets)
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while True:
                room = CONCURRENCY - len(self._sending)
                if room <= 0:  # all in flight: look again when one ends
                    await asyncio.wait(self._sending, timeout=POLL_SECONDS,
                                       return_when=asyncio.FIRST_COMPLETED)
                    continue
                claimed = await self._claim(room)
                for delivery in claimed:
                    sending = asyncio.create_task(self._send(delivery))
                    self._sending.add(sending)
                    sending.add_done_callback(self._sending.discard)
                if len(claimed) < room:  # nothing more is due now
                    await asyncio.sleep(POLL_SECONDS)
        finally:
            # cut short: their claims run out and another worker sends them again
            for sending in list(self._sending):
                sending.cancel()
            for sending in list(self._sending):
                with contextlib.suppress(asyncio.CancelledError):
                    await sending

    async def _claim(self, room: int) -> list[WebhookDelivery]:
        settings = self._deps.settings
        try:
            return await store.claim(self._deps.pool, settings.queue_name, room,
                                     settings.webhook_timeout + CLAIM_SLACK)
        except Exception as exc:  # Postgres away: look again next time
            log.warning("webhooks: could not read the outbox: %s", exc)
            return []

    async def _send(self, delivery: WebhookDelivery) -> None:
        started = time.monotonic()
        status: int | None = None
        wait: float | None = None
        try:
            text = delivery.body or await self._first_body(delivery)
            async with asyncio.timeout(self._deps.settings.webhook_timeout):
                response = await self._client.post(
                    self._url, content=text.encode(),
                    headers=self._signer.headers(delivery.id, text))
            status = response.status_code
            error = None if 200 <= status < 300 else f"the receiver answered {status}"
            if error is not None:
                wait = retry_after(response.headers.get("retry-after"))
        except (TimeoutError, httpx.TimeoutException):
            error = f"no answer within {self._deps.settings.webhook_timeout:g}s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        except Exception as exc:  # Postgres away: the claim runs out, and it is sent again then
            log.warning("webhook %s of task %s: %s; it is tried again later", delivery.id,
                        delivery.task_id, exc)
            return
        try:
            outcome = await self._record(delivery, status, error, wait)
        except Exception as exc:
            log.warning("webhook %s of task %s: could not record attempt %d (%s): %s",
                        delivery.id, delivery.task_id, delivery.attempt, error or "delivered",
                        exc)
            return
        if self._observer is not None:
            self._observer.webhook_attempted(outcome, time.monotonic() - started)

    async def _first_body(self, delivery: WebhookDelivery) -> str:
        try:
            task: Task | None = await task_store.get(self._deps.pool, delivery.tenant,
                                                     delivery.task_id)
        except NotFound:
            task = None
        return await store.keep_body(self._deps.pool, delivery, body(delivery, task))

    async def _record(self, delivery: WebhookDelivery, status: int | None, error: str | None,
                      wait: float | None) -> str:
        pool, settings = self._deps.pool, self._deps.settings
        what = f"webhook {delivery.id} ({delivery.event} of task {delivery.task_id})"
        if error is None:
            kept = await store.delivered(pool, delivery, status or 0)
            outcome = "delivered"
        elif delivery.attempt >= settings.webhook_attempts:
            kept = await store.give_up(pool, delivery, status, error)
            outcome = "failed"
            if kept:
                log.warning("%s failed: %d attempts, the last: %s; no more", what,
                            delivery.attempt, error)
        else:
            delay = settings.webhook_retry_delay(delivery.attempt) * random.uniform(0.8, 1.2)
            if wait is not None:
                delay = max(delay, min(wait, MAX_RETRY_AFTER))
            kept = await store.retry_later(pool, delivery, delay, status, error)
            outcome = "retrying"
            if kept:
                log.info("%s, attempt %d: %s; again in %.1fs", what, delivery.attempt, error,
                         delay)
        if not kept:
            log.info("%s: attempt %d outlasted its claim; another one has it", what,
                     delivery.attempt)
        return outcome
