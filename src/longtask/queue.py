"""ARQ glue shared by the web process and the worker: connection, wire format, enqueue."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, RedisError, TimeoutError

from longtask.store.items import PendingJob

log = logging.getLogger(__name__)

RUN_ITEM = "run_item"  # the one ARQ function: run an item of a task


WORKER_RETRIES = 40  # about a minute of backoff: a worker rides out a Redis restart
WEB_RETRIES = 2  # a request should get its 503 quickly instead


def redis_settings(url: str, retries: int = WEB_RETRIES) -> RedisSettings:
    """ARQ settings from a REDIS_URL: redis://, rediss:// (Heroku's self-signed certificate is
    accepted unless the URL says `?ssl_cert_reqs=required`) or unix://. A command that meets a
    lost connection is retried with backoff (ARQ's own poll loop would die on it otherwise)."""
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 5
    settings.conn_retries = 2
    settings.retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries)
    settings.retry_on_error = [ConnectionError, TimeoutError, BusyLoadingError, OSError]
    if settings.ssl:
        wanted = parse_qs(urlparse(url).query).get("ssl_cert_reqs", ["none"])[0]
        settings.ssl_cert_reqs = wanted
    return settings


def dumps(value: Any) -> bytes:
    """ARQ's wire format: JSON, not pickle (jobs carry ids; the rest lives in Postgres)."""
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def loads(raw: bytes) -> Any:
    return json.loads(raw)


async def connect(url: str, retries: int = WEB_RETRIES) -> ArqRedis:
    return await create_pool(redis_settings(url, retries), job_serializer=dumps,
                             job_deserializer=loads)


async def enqueue(arq: ArqRedis, queue_name: str, jobs: Iterable[PendingJob]) -> int:
    """Enqueue item jobs; a job id already queued or running is left alone (ARQ dedupes).

    Failure is logged, not raised: the rows are committed, and the reconciler enqueues what
    Redis does not hold.
    """
    async def one(job: PendingJob) -> bool:
        defer = job.run_after if isinstance(job.run_after, datetime) else None
        queued = await arq.enqueue_job(RUN_ITEM, job.item_id, _job_id=job.job_id,
                                       _queue_name=queue_name, _defer_until=defer)
        return queued is not None

    try:
        done = await asyncio.gather(*(one(j) for j in jobs))
    except (RedisError, OSError) as exc:
        log.warning("enqueue failed; the reconciler will retry: %s", exc)
        return 0
    return sum(done)


async def depth(arq: ArqRedis, queue_name: str) -> int:
    """Item jobs queued (deferred retries included); ARQ's own cron jobs are not counted."""
    crons = 0
    async for _ in arq.zscan_iter(queue_name, match="cron:*", count=1000):
        crons += 1
    return int(await arq.zcard(queue_name)) - crons
