"""The ARQ worker: settings, start-up and shut-down, the cancel listener, and cron jobs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from arq import cron
from arq.worker import Retry, func, run_worker
from redis.exceptions import RedisError

from longtask.broker import connection, embed_rpc, fair, published, queue
from longtask.broker import keys as redis_keys
from longtask.config import Settings, require_services
from longtask.core.kinds import Registry
from longtask.db import create_pool
from longtask.obs import logs
from longtask.obs.metrics import WorkerMetrics
from longtask.pipeline import providers
from longtask.pipeline.embed import LocalEmbedder
from longtask.service import duties, schedules, webhooks
from longtask.service.deps import Deps
from longtask.service.outages import DEPENDENCY_ERRORS
from longtask.service.params import check_schemas
from longtask.store import files as file_store
from longtask.store import tasks as task_store
from longtask.store import webhooks as webhook_store
from longtask.worker.context import Services
from longtask.worker.runner import Running, run_item

log = logging.getLogger(__name__)


def worker_settings(settings: Settings) -> dict[str, Any]:
    """Everything `arq worker.WorkerSettings` needs, from one Settings."""
    database_url, redis_url = require_services(settings)
    registry = Registry.from_modules(settings.kind_modules)
    check_schemas(registry)  # as the web does: a bad params_schema stops the start
    running = Running()
    metrics = WorkerMetrics()
    background: list[asyncio.Task[None]] = []
    stop_metrics: list[Callable[[], None]] = []

    async def startup(ctx: dict[str, Any]) -> None:
        # again: the `arq` command set up a handler and level of its own after it imported us
        logs.configure_logging(settings)
        if settings.metrics_port:
            stop_metrics.append(metrics.serve(settings.metrics_port))
        pool = await create_pool(database_url, min_size=settings.db_pool_min,
                                 max_size=settings.db_pool_max,
                                 statement_cache=settings.db_statement_cache)
        services = Services(
            settings=settings, pool=pool, redis=ctx["redis"],
            http=httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)),
            worker_id=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            metrics=metrics,
        )
        ctx["services"] = services
        background.append(asyncio.create_task(_listen_for_cancels(services, running)))
        background.append(asyncio.create_task(_announce(services, running)))
        if not settings.metrics_port:
            background.append(asyncio.create_task(_publish_metrics(services)))
        # not ARQ cron jobs: those wait behind a backlog of item jobs, and these must not
        background.append(asyncio.create_task(
            _duty(services, "reap", settings.reaper_seconds, duties.reap)))
        background.append(asyncio.create_task(
            _duty(services, "reconcile", duties.RECONCILE_EVERY_SECONDS, duties.reconcile)))
        background.append(asyncio.create_task(_duty(
            services, "schedule", schedules.EVERY_SECONDS,
            lambda deps: schedules.fire_due(deps, registry))))
        await webhooks.register(services.deps)  # with a URL, ended tasks get a webhook
        if settings.webhook_url:  # sent by every worker, outside the job slots
            background.append(asyncio.create_task(webhooks.deliver(services.deps, metrics)))
        background.append(asyncio.create_task(_dispatch(services)))
        if not settings.embed_url:  # the offline model: serve query embeddings, load it now
            embedder = services.resource("embedder",
                                         lambda: providers.embedder(settings, services.http))
            background.append(asyncio.create_task(embed_rpc.serve(services.redis, embedder)))
            if isinstance(embedder, LocalEmbedder):
                background.append(asyncio.create_task(_warm(embedder)))
        log.info("worker %s ready; kinds: %s", services.worker_id, ", ".join(registry.names()))

    async def shutdown(ctx: dict[str, Any]) -> None:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        services: Services | None = ctx.get("services")
        if services is not None:
            if not settings.metrics_port:
                await _push_metrics(services)  # what the last items added, for a last scrape
            with contextlib.suppress(RedisError, OSError):
                await services.redis.delete(redis_keys.worker_key(services.worker_id))
            await fair.leave(services.redis, settings, services.worker_id, _heartbeat_ttl(settings))
            await services.close()
        for close_metrics in stop_metrics:
            close_metrics()

    async def run_item_job(ctx: dict[str, Any], item_id: str) -> str:
        try:
            return await run_item(ctx["services"], registry, running, item_id, ctx["job_id"])
        except DEPENDENCY_ERRORS as exc:  # could not even claim it: ARQ runs it again soon
            log.warning("job %s: a backing service is away (%r); retrying", ctx["job_id"], exc)
            raise Retry(defer=min(2 * ctx["job_try"], 15)) from None

    async def after_job(ctx: dict[str, Any]) -> None:
        """ARQ has ended a run of a job: its dispatch slot is freed, and the next job
        dispatched, by the next batch of endings. Never raises: ARQ would stop."""
        ctx["services"].notices.ended(ctx["job_id"])

    async def purge(ctx: dict[str, Any]) -> int:
        """Retention: delete tasks that ended more than LONGTASK_RETENTION_DAYS ago, uploads
        that no document refers to, and webhooks sent or given up that long ago."""
        pool = ctx["services"].pool
        return (await task_store.purge_finished(pool, settings.retention_days)
                + await file_store.purge_orphans(pool)
                + await webhook_store.purge(pool, settings.retention_days))

    return {
        "functions": [func(run_item_job, name=queue.RUN_ITEM)],
        "cron_jobs": [
            cron(purge, name="purge", minute={17}, second={0}),
        ],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "after_job_end": after_job,
        # our client, not one ARQ makes from RedisSettings: the same as the web's, Sentinel too
        "redis_pool": connection.pool(redis_url, connection.WORKER_RETRIES),
        "queue_name": settings.queue_name,
        "max_jobs": settings.worker_concurrency,
        "job_completion_wait": int(settings.shutdown_grace),
        "job_timeout": settings.job_timeout,
        "keep_result": 60,
        "max_tries": 100,  # tries of one job id while Postgres is away; attempts are ours
        "poll_delay": 0.05,
        "allow_abort_jobs": True,
        "job_serializer": connection.dumps,
        "job_deserializer": connection.loads,
        "health_check_interval": 10,
    }


def run(settings: Settings) -> None:
    """`longtask worker`, the Procfile's worker process: ARQ's worker in this process until
    SIGTERM (running items get LONGTASK_SHUTDOWN_GRACE, then are handed back). Logging is the
    caller's; the `arq` command would add a handler of its own and print each line twice."""
    run_worker(worker_settings(settings))


def __getattr__(name: str) -> Any:
    """`arq longtask.worker.main.WorkerSettings`: the worker process from the environment (what
    `longtask dev` runs). Built when arq asks for it, so importing this module does no I/O."""
    if name == "WorkerSettings":
        settings = Settings.from_env()
        logs.configure_logging(settings)
        return worker_settings(settings)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def _listen_for_cancels(services: Services, running: Running) -> None:
    """Stop a canceled task's running items at once (the heartbeat is the slower fallback)."""
    while True:
        pubsub = services.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(redis_keys.CANCEL_CHANNEL)
            async for message in pubsub.listen():
                task_id = message["data"].decode() if isinstance(message["data"], bytes) \
                    else str(message["data"])
                if running.cancel_task(task_id, "canceled"):
                    log.info("canceled the running items of task %s", task_id)
        except (RedisError, OSError) as exc:
            log.warning("cancel listener lost Redis (%s); reconnecting", exc)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        await asyncio.sleep(1.0)


async def _duty(services: Services, name: str, every: float,
                duty: Callable[[Deps], Awaitable[int]]) -> None:
    """Run `duty` every `every` seconds on one worker of all (a Redis lock per interval)."""
    key = redis_keys.duty_lock(name, services.settings.queue_name)
    while True:
        try:
            if await services.redis.set(key, services.worker_id, nx=True, px=int(every * 900)):
                done = await duty(services.deps)
                if done:
                    log.info("%s: %d item(s)", name, done)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Postgres or Redis away: try again next time
            log.warning("%s failed: %s", name, exc)
        await asyncio.sleep(every)


async def _dispatch(services: Services) -> None:
    """Every worker, each second: dispatch what may go now (deferred jobs come due, the fleet
    grew, a freed slot was missed). No lock: each call is one atomic script, and cheap when
    there is nothing to do."""
    while True:
        try:
            await fair.dispatch(services.redis, services.settings)
        except Exception:  # a bug, not an outage (that is logged and retried in there)
            log.exception("dispatch failed")
        await asyncio.sleep(fair.DISPATCH_EVERY_SECONDS)


async def _warm(embedder: LocalEmbedder) -> None:
    try:
        await embedder.warm()
    except Exception as exc:  # ingest reports it as a typed error when it needs the model
        log.warning("could not load the embedding model: %s", exc)


async def _announce(services: Services, running: Running) -> None:
    """Keep this worker's heartbeat key alive in Redis, for /ready and /stats."""
    settings = services.settings
    key = redis_keys.worker_key(services.worker_id)
    started = time.time()
    while True:
        info = {"id": services.worker_id, "started": started, "running": len(running),
                "max_jobs": settings.worker_concurrency}
        # the fleet's capacity first: once the key below is seen, dispatch knows of this worker
        await fair.heartbeat(services.redis, settings, services.worker_id,
                             _heartbeat_ttl(settings))
        with contextlib.suppress(RedisError, OSError):
            await services.redis.set(key, json.dumps(info), ex=int(_heartbeat_ttl(settings)))
        await asyncio.sleep(settings.heartbeat_seconds)


def _heartbeat_ttl(settings: Settings) -> float:
    """How long a worker's heartbeat counts without the next one: three beats, 3 s at least."""
    return float(max(int(settings.heartbeat_seconds * 3), 3))


async def _publish_metrics(services: Services) -> None:
    """Keep this worker's metrics in Redis, for every web process's /metrics."""
    while True:
        await _push_metrics(services)
        await asyncio.sleep(services.settings.metrics_push_seconds)


async def _push_metrics(services: Services) -> None:
    settings = services.settings
    with contextlib.suppress(RedisError, OSError):  # Redis away: the next push says it all
        await published.publish(services.redis, settings.queue_name, services.worker_id,
                                services.metrics.dump(), settings.metrics_ttl)
