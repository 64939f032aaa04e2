"""/tasks: submit, read, list, cancel, delete, and stream tokens."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from longtask.core import tokens
from longtask.core.errors import Invalid
from longtask.core.models import Created, Task
from longtask.core.status import ALL as STATUSES
from longtask.service import tasks as tasks_service
from longtask.store import items as item_store
from longtask.store import tasks as task_store
from longtask.web.common import authenticate, int_query, json_body, task_id, text_query

_MAX_IDEMPOTENCY_KEY = 200
_MAX_DEADLINE = 30 * 86400
_MAX_DEFER = 30 * 86400  # run_at / delay: at most this far ahead
_PAST_GRACE = timedelta(minutes=1)  # a run_at this far past is "now" (clocks differ a little)


async def submit(request: Request) -> Response:
    tenant = await authenticate(request)
    state = request.state
    body = await json_body(request, state.settings.max_params_bytes)
    if not isinstance(body, dict):
        raise Invalid('the body must be a JSON object: {"kind": ..., "params": {...}}')
    kind = state.registry.for_submit(body.get("kind"))
    params = {} if body.get("params") is None else body["params"]
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY:
        raise Invalid(f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY} characters",
                      code="invalid_idempotency_key")
    deadline = body.get("deadline_seconds")
    if deadline is not None and (not isinstance(deadline, (int, float)) or isinstance(
            deadline, bool) or not 0 < deadline <= _MAX_DEADLINE):
        raise Invalid(f"`deadline_seconds` must be a number of seconds up to {_MAX_DEADLINE}",
                      code="invalid_deadline")
    created = await tasks_service.submit(state.deps, tenant, kind, params, idempotency_key=key,
                                         deadline_seconds=deadline, run_at=start_time(body))
    return accepted(created)


def start_time(body: dict[str, Any]) -> datetime | None:
    """When a deferred task may start: `run_at` (ISO 8601 with a timezone) or `delay` (seconds
    from now), up to 30 days ahead; a `run_at` up to a minute past is taken as "now"."""
    run_at, delay = body.get("run_at"), body.get("delay")
    now = datetime.now(timezone.utc)
    if run_at is not None and delay is not None:
        raise Invalid("give `run_at` or `delay`, not both", code="invalid_run_at")
    if delay is not None:
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) \
                or not 0 <= delay <= _MAX_DEFER:
            raise Invalid(f"`delay` must be a number of seconds from 0 to {_MAX_DEFER}",
                          code="invalid_delay")
        return now + timedelta(seconds=delay)
    if run_at is None:
        return None
    try:
        when = datetime.fromisoformat(run_at) if isinstance(run_at, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise Invalid("`run_at` must be an ISO 8601 time with a timezone, e.g. "
                      "2030-01-01T09:00:00Z", code="invalid_run_at")
    if not now - _PAST_GRACE <= when <= now + timedelta(seconds=_MAX_DEFER):
        raise Invalid(f"`run_at` must be from a minute ago to {_MAX_DEFER // 86400} days "
                      "ahead", code="invalid_run_at")
    return max(when, now)


async def retry(request: Request) -> Response:
    """Run a finished task's failed items again, as a new task that points at it."""
    tenant = await authenticate(request)
    return accepted(await tasks_service.retry(request.state.deps, tenant, task_id(request)))


def accepted(created: Created, **extra: Any) -> Response:
    """202 with the task (and `extra`), whose jobs the service has enqueued."""
    headers = {"Location": f"/tasks/{created.task.id}"}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse({**task_body(created.task), **extra}, status_code=202, headers=headers)


async def show(request: Request) -> Response:
    tenant = await authenticate(request)
    task = await task_store.get(request.state.pool, tenant, task_id(request))
    body = task_body(task)
    body["items"] = await item_store.list_for_task(request.state.pool, tenant, task.id)
    return JSONResponse(body)


async def index(request: Request) -> Response:
    tenant = await authenticate(request)
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise Invalid(f"`status` must be one of {', '.join(STATUSES)}", code="invalid_query")
    kind = text_query(request, "kind")
    schedule = request.query_params.get("schedule_id") or None
    if schedule is not None:
        try:
            schedule = str(uuid.UUID(schedule))
        except ValueError:
            raise Invalid("`schedule_id` must be a schedule's id", code="invalid_query") \
                from None
    limit = int_query(request, "limit", 50, 1, 200)
    before = decode_cursor(request.query_params.get("cursor"))
    page = await task_store.list_page(request.state.pool, tenant, status=status, kind=kind,
                                      schedule_id=schedule, limit=limit, before=before)
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(page) == limit else None
    return JSONResponse({"tasks": [task_body(t) for t in page], "next_cursor": next_cursor})


async def cancel(request: Request) -> Response:
    tenant = await authenticate(request)
    task = await tasks_service.cancel(request.state.deps, tenant, task_id(request))
    return JSONResponse(task_body(task))


async def delete(request: Request) -> Response:
    tenant = await authenticate(request)
    await tasks_service.delete(request.state.deps, tenant, task_id(request))
    return Response(status_code=204)


async def stream_token(request: Request) -> Response:
    """A token for `GET /tasks/{id}/events?token=...` and `/ws?token=...`, for browsers."""
    tenant = await authenticate(request)
    state = request.state
    task = await task_store.get(state.pool, tenant, task_id(request))
    ttl = state.settings.stream_token_ttl
    token = tokens.make(state.secret, tenant, task.id, ttl)
    return JSONResponse({"token": token, "expires_in": int(ttl),
                         "events_url": f"/tasks/{task.id}/events?token={token}",
                         "ws_url": f"/tasks/{task.id}/ws?token={token}"})


def task_body(task: Task) -> dict[str, Any]:
    body = task.as_dict()
    body["links"] = {
        "self": f"/tasks/{task.id}",
        "events": f"/tasks/{task.id}/events",
        "ws": f"/tasks/{task.id}/ws",
        "cancel": f"/tasks/{task.id}/cancel",
        "retry": f"/tasks/{task.id}/retry",
        "stream_token": f"/tasks/{task.id}/stream-token",
    }
    return body


def encode_cursor(created_at: datetime, ident: str) -> str:
    """A keyset position: the (created_at, id) of the last row of a page."""
    raw = f"{created_at.isoformat()}|{ident}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(raw: str | None) -> tuple[datetime, str] | None:
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        when, _, ident = text.partition("|")
        moment = datetime.fromisoformat(when)
        if moment.tzinfo is None:  # ours are aware
            raise ValueError("naive")
        # in UTC, or OverflowError for a time no row can have (a year-1 time east of UTC)
        return moment.astimezone(timezone.utc), str(uuid.UUID(ident))
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise Invalid("`cursor` is not one this server gave out", code="invalid_cursor") \
            from None


routes = [
    Route("/tasks", submit, methods=["POST"]),
    Route("/tasks", index, methods=["GET"]),
    Route("/tasks/{id}", show, methods=["GET"]),
    Route("/tasks/{id}", delete, methods=["DELETE"]),
    Route("/tasks/{id}/cancel", cancel, methods=["POST"]),
    Route("/tasks/{id}/retry", retry, methods=["POST"]),
    Route("/tasks/{id}/stream-token", stream_token, methods=["POST"]),
]
