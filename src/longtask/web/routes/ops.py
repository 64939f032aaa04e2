"""/health (the process is up), /ready (it can do its job), /stats (what the tenant has),
/metrics (Prometheus, all tenants)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from longtask.broker import admission, fair, published
from longtask.broker import keys as redis_keys
from longtask.obs.metrics import CONTENT_TYPE, Snapshot
from longtask.store import tasks as task_store
from longtask.web.common import authenticate

log = logging.getLogger(__name__)

_CHECK_TIMEOUT = 2.0
_SCRAPE_TIMEOUT = 1.0  # a scrape answers fast, without what could not be read in time


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    state = request.state
    postgres = await _check(state.pool.fetchval("SELECT 1"))
    redis = await _check(state.arq.ping())
    workers = await _check(_workers_alive(state.arq))
    ok = postgres == 1 and redis is True and isinstance(workers, int) and workers > 0
    checks = {
        "postgres": "ok" if postgres == 1 else postgres,
        "redis": "ok" if redis is True else redis,
        "workers": workers,
    }
    return JSONResponse({"status": "ready" if ok else "not_ready", "checks": checks},
                        status_code=200 if ok else 503)


async def stats(request: Request) -> Response:
    tenant = await authenticate(request)
    state = request.state
    by_status: dict[str, int] = {}
    by_kind: dict[str, dict[str, int]] = {}
    for kind, status, n in await task_store.counts(state.pool, tenant):
        by_status[status] = by_status.get(status, 0) + n
        by_kind.setdefault(kind, {})[status] = n
    _, mine = await fair.depths(state.arq, state.settings.queue_name, tenant)
    return JSONResponse({
        "tasks": {"by_status": by_status, "by_kind": by_kind},
        "queue_depth": await admission.depth(state.arq, state.settings.queue_name),
        "queued": mine.total,  # this tenant's item jobs waiting or running
        "workers_alive": await _workers_alive(state.arq),
        "open_streams": state.hub.listeners,
    })


async def metrics(request: Request) -> Response:
    """No key, like /health: expose it to your Prometheus, not to the internet."""
    state = request.state
    queue = state.settings.queue_name
    tasks, depth, workers, from_workers = await asyncio.gather(
        _scrape("tasks", task_store.counts_all(state.pool)),
        _scrape("queue_depth", admission.depth(state.arq, queue)),
        _scrape("workers_alive", _workers_alive(state.arq)),
        _scrape("worker metrics", published.read(state.arq, queue)))
    body = state.metrics.render(Snapshot(tasks, depth, workers, from_workers))
    return Response(body, media_type=CONTENT_TYPE)


async def _scrape(what: str, awaitable: Any) -> Any:
    """The awaited value, or None (the figure is left out) if it failed or took too long."""
    try:
        return await asyncio.wait_for(awaitable, _SCRAPE_TIMEOUT)
    except Exception as exc:
        log.warning("/metrics: %s not read: %r", what, exc)
        return None


async def _workers_alive(redis: Any) -> int:
    count = 0
    async for _ in redis.scan_iter(match=redis_keys.WORKER_PATTERN, count=500):
        count += 1
    return count


async def _check(awaitable: Any) -> Any:
    """The awaited value, or a short 'down: ...' if it failed or took too long."""
    try:
        return await asyncio.wait_for(awaitable, _CHECK_TIMEOUT)
    except Exception as exc:
        return f"down: {type(exc).__name__}"


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/stats", stats, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
