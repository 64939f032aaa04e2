"""/health (the process is up), /ready (it can do its job), /stats (what the tenant has),
/metrics (Prometheus, all tenants, for the scraper's token)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from longtask.broker import admission, fair, published
from longtask.broker import keys as redis_keys
from longtask.core.errors import NotFound, Unauthenticated
from longtask.obs.metrics import CONTENT_TYPE, Snapshot
from longtask.store import files as file_store
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
        "storage": {"bytes": await file_store.stored_bytes(state.pool, tenant),
                    "quota": state.settings.max_tenant_bytes},
    })


async def metrics(request: Request) -> Response:
    """Prometheus, all tenants: for a scraper holding LONGTASK_METRICS_TOKEN only (it names
    every kind and its counts), and cheap however often it is scraped (`Figures`)."""
    state = request.state
    _authorize_scrape(request, state.settings.metrics_token)
    snapshot = await state.figures.read(state)
    return Response(state.metrics.render(snapshot), media_type=CONTENT_TYPE)


class Figures:
    """The figures `/metrics` reads from Postgres and Redis (tasks by kind and status over all
    tenants, the queue, the workers and what they published), read at most once per `every`
    seconds by this process: parallel scrapes share one read, later ones reuse it."""

    def __init__(self, every: float) -> None:
        self._every = every
        self._lock = asyncio.Lock()
        self._snapshot: Snapshot | None = None
        self._read_at = 0.0

    async def read(self, state: Any) -> Snapshot:
        async with self._lock:
            if self._snapshot is None or time.monotonic() - self._read_at >= self._every:
                self._snapshot = await _read_figures(state)
                self._read_at = time.monotonic()
            return self._snapshot


async def _read_figures(state: Any) -> Snapshot:
    queue = state.settings.queue_name
    tasks, depth, workers, from_workers = await asyncio.gather(
        _scrape("tasks", task_store.counts_all(state.pool)),
        _scrape("queue_depth", admission.depth(state.arq, queue)),
        _scrape("workers_alive", _workers_alive(state.arq)),
        _scrape("worker metrics", published.read(state.arq, queue)))
    return Snapshot(tasks, depth, workers, from_workers)


def _authorize_scrape(request: Request, token: str | None) -> None:
    if not token:
        raise NotFound("/metrics is off: set LONGTASK_METRICS_TOKEN, and scrape with "
                       "`Authorization: Bearer <it>`")
    sent = request.headers.get("authorization", "")
    scheme, _, credentials = sent.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.strip().encode(), token.encode()):
        raise Unauthenticated("scrape /metrics with `Authorization: Bearer "
                              "<LONGTASK_METRICS_TOKEN>`", code="invalid_metrics_token")


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
