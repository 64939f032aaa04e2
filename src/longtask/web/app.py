"""The Starlette app: a flat route list, a lifespan that yields the shared services, and one
handler that renders every error as {"error": code, "detail": ...}."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from longtask.broker import connection
from longtask.broker.admission import Admission
from longtask.broker.embed_rpc import RemoteEmbedder
from longtask.broker.hub import Hub
from longtask.broker.streams import OpenStreams
from longtask.config import Settings, require_services
from longtask.core.errors import DomainError, Unavailable
from longtask.core.kinds import Registry
from longtask.db import create_pool
from longtask.obs.metrics import WebMetrics, prepare_multiprocess
from longtask.pipeline import providers
from longtask.service.deps import Deps
from longtask.service.outages import DEPENDENCY_ERRORS
from longtask.service.params import check_schemas
from longtask.store import meta
from longtask.web import openapi, request_id
from longtask.web.common import KeyCache
from longtask.web.errors import domain_response, error_response
from longtask.web.instrument import HttpMetrics
from longtask.web.routes import dashboard, docs, documents, ops, schedules, sockets, stream, tasks

log = logging.getLogger(__name__)

WEB_GRACE_SECONDS = 25


def create_app(settings: Settings) -> Starlette:
    database_url, redis_url = require_services(settings)
    connection.redis_settings(redis_url)  # a bad REDIS_URL fails now, not in the lifespan
    registry = Registry.from_modules(settings.kind_modules)
    check_schemas(registry)  # a kind's bad params_schema stops the start
    described = openapi.spec(registry)
    metrics = WebMetrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        pool = await create_pool(database_url, min_size=settings.db_pool_min,
                                 max_size=settings.db_pool_max,
                                 statement_cache=settings.db_statement_cache)
        arq = await connection.connect(redis_url)
        hub = Hub(arq, on_listeners=metrics.streams_open)
        await hub.start()
        http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
        query_embedder = (providers.embedder(settings, http) if settings.embed_url
                          else RemoteEmbedder(arq, settings.embed_model))
        admission = Admission(settings, arq)
        streams = OpenStreams(arq, settings.max_streams)
        await streams.start()
        deps = Deps.open(settings, pool, arq, admission=admission)
        try:
            yield {
                "settings": settings, "pool": pool, "arq": arq, "hub": hub, "registry": registry,
                "keys": KeyCache(pool), "secret": settings.secret or await meta.shared_secret(pool),
                "admission": admission, "openapi": described,
                "query_embedder": query_embedder, "metrics": metrics,
                "figures": ops.Figures(settings.metrics_refresh_seconds),
                "deps": deps, "streams": streams,
            }
        finally:
            await streams.stop()
            await deps.close()
            await http.aclose()
            await hub.stop()
            await arq.aclose()
            await pool.close()
            metrics.close()

    # the request id outermost: every answer carries it, the ones of the middleware below too
    middleware = [Middleware(request_id.RequestId), Middleware(HttpMetrics, metrics=metrics)]
    if settings.cors_origins:
        middleware.append(Middleware(
            # keys travel in the Authorization header, never in cookies: no credentials mode
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["Location", "Retry-After", "Idempotent-Replayed",
                            request_id.HEADER], max_age=600,
        ))
    return Starlette(
        routes=[*tasks.routes, *stream.routes, *sockets.routes, *schedules.routes,
                *documents.routes, *ops.routes, *openapi.routes, *docs.routes, *dashboard.routes],
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            DomainError: _domain_error,
            HTTPException: _http_error,
            # a dependency that is down is the service's trouble, not the client's: 503
            **{exc: _unavailable for exc in DEPENDENCY_ERRORS},
            Exception: _internal,
        },
    )


def app_from_env() -> Starlette:
    """The web process from the environment: `uvicorn --factory longtask.web.app:app_from_env`
    (what `longtask dev` runs; it needs no file outside the package)."""
    from longtask.obs.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings)
    return create_app(settings)


def serve(settings: Settings, host: str = "0.0.0.0") -> None:
    """`longtask web`, the Procfile's web process: `app_from_env` on `settings.port`, in
    `settings.web_concurrency` processes (WEB_CONCURRENCY), until SIGTERM. Logging is the
    caller's (uvicorn's own set-up would print its lines in a format of its own)."""
    import uvicorn

    # each process reads its own settings: hand them the URLs (embedded services' included)
    assert settings.database_url and settings.redis_url
    connection.redis_settings(settings.redis_url)  # a bad one: one line, not one per process
    os.environ.update(DATABASE_URL=settings.database_url, REDIS_URL=settings.redis_url)
    if settings.web_concurrency > 1:
        prepare_multiprocess()  # the processes add up their metrics, whichever one is scraped
    uvicorn.run(f"{__name__}:app_from_env", factory=True, host=host, port=settings.port,
                workers=settings.web_concurrency, log_config=None,
                # open streams are told to reconnect, requests finish; the platform's SIGKILL
                # comes 30 s after its SIGTERM
                timeout_graceful_shutdown=WEB_GRACE_SECONDS)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    return domain_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, exc.detail, dict(exc.headers or {}))


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: a dependency is unavailable: %r", request.method, request.url.path, exc)
    return domain_response(Unavailable("a backing service (Postgres or Redis) is not reachable; "
                                       "try again shortly", retry_after=2))


async def _internal(request: Request, exc: Exception) -> Response:
    # answered outside the middleware (Starlette's outermost layer): the id comes from the scope
    ident = request_id.of(request.scope)
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc,
                  extra={"request_id": ident})
    return error_response(500, "internal_error", "an unexpected error; it has been logged",
                          {request_id.HEADER: ident} if ident else {})


