"""/schedules: recurring tasks. Create, list, read, pause, resume, delete; the workers' scheduler
duty (jobs.scheduler) fires them."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from longtask.core.errors import Invalid
from longtask.service import cron
from longtask.service.params import items_of
from longtask.store import schedules as schedule_store
from longtask.store.schedules import Schedule
from longtask.web.common import authenticate, int_query, json_body, uuid_value
from longtask.web.routes.tasks import decode_cursor, encode_cursor


async def create(request: Request) -> Response:
    tenant = await authenticate(request)
    state = request.state
    body = await json_body(request, state.settings.max_params_bytes)
    if not isinstance(body, dict):
        raise Invalid('the body must be a JSON object: {"kind": ..., "params": {...}, '
                      '"cron": "0 * * * *"}')
    kind = state.registry.for_submit(body.get("kind"))
    params = {} if body.get("params") is None else body["params"]
    items_of(kind, params)  # the params must fit the kind now, not fail at every firing
    expression = cron.validate(body.get("cron"), state.settings.min_schedule_seconds)
    schedule = await schedule_store.create(
        state.pool, tenant=tenant, kind=kind.name, params=params, cron=expression,
        next_run=cron.next_after, max_per_tenant=state.settings.max_schedules,
        queue=state.settings.queue_name)
    return JSONResponse(schedule_body(schedule), status_code=201,
                        headers={"Location": f"/schedules/{schedule.id}"})


async def index(request: Request) -> Response:
    tenant = await authenticate(request)
    limit = int_query(request, "limit", 50, 1, 200)
    before = decode_cursor(request.query_params.get("cursor"))
    page = await schedule_store.list_page(request.state.pool, tenant, limit=limit, before=before)
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(page) == limit else None
    return JSONResponse({"schedules": [schedule_body(s) for s in page],
                         "next_cursor": next_cursor})


async def show(request: Request) -> Response:
    tenant = await authenticate(request)
    schedule = await schedule_store.get(request.state.pool, tenant, schedule_id(request))
    return JSONResponse(schedule_body(schedule))


async def pause(request: Request) -> Response:
    return await _set_paused(request, True)


async def resume(request: Request) -> Response:
    """Resume from now: the slots that passed while it was paused do not fire."""
    return await _set_paused(request, False)


async def delete(request: Request) -> Response:
    tenant = await authenticate(request)
    await schedule_store.delete(request.state.pool, tenant, schedule_id(request))
    return Response(status_code=204)


def schedule_id(request: HTTPConnection) -> str:
    """The `{id}` path value of a schedule route, normalised."""
    return uuid_value(request.path_params["id"], "schedule")


def schedule_body(schedule: Schedule) -> dict[str, Any]:
    body = schedule.as_dict()
    body["links"] = {
        "self": f"/schedules/{schedule.id}",
        "pause": f"/schedules/{schedule.id}/pause",
        "resume": f"/schedules/{schedule.id}/resume",
        "tasks": f"/tasks?schedule_id={schedule.id}",
    }
    return body


async def _set_paused(request: Request, paused: bool) -> Response:
    tenant = await authenticate(request)
    schedule = await schedule_store.set_paused(request.state.pool, tenant, schedule_id(request),
                                               paused, cron.next_after)
    return JSONResponse(schedule_body(schedule))


routes = [
    Route("/schedules", create, methods=["POST"]),
    Route("/schedules", index, methods=["GET"]),
    Route("/schedules/{id}", show, methods=["GET"]),
    Route("/schedules/{id}", delete, methods=["DELETE"]),
    Route("/schedules/{id}/pause", pause, methods=["POST"]),
    Route("/schedules/{id}/resume", resume, methods=["POST"]),
]
