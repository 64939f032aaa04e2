"""ARQ glue shared by the web process and the worker: connection, wire format, enqueue."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

from arq import ArqRedis, create_pool
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms
from arq.connections import RedisSettings
from redis.asyncio.retry import Retry
from redis.commands.core import AsyncScript
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
    redis = await create_pool(redis_settings(url, retries), job_serializer=dumps,
                              job_deserializer=loads)
    retry_handshakes(redis)
    return redis


# few: each attempt includes redis-py's own retried TCP connect, so while Redis is simply down
# this multiplies that wait (a web request's 503 comes about a second later, not ten)
_HANDSHAKE_RETRY = Retry(ExponentialBackoff(cap=0.5, base=0.05), 3)


class _RetriedHandshake:
    """A connection whose whole connect is retried, handshake included. redis-py retries the
    TCP connect only; a Redis that is restarting can accept a connection and reset it during
    the handshake (HELLO, SELECT), and that error escapes even a retried command: in ARQ's poll
    loop it ends the worker process."""

    async def connect(self) -> None:
        await _HANDSHAKE_RETRY.call_with_retry(
            super().connect, lambda error: self.disconnect())  # type: ignore[misc]


def retry_handshakes(redis: ArqRedis) -> None:
    """Make the pool's connections retry their handshake when they (re)connect: the ones to
    come, and the ones it holds already (ARQ pinged through one before we got the pool)."""
    pool = redis.connection_pool
    if issubclass(pool.connection_class, _RetriedHandshake):
        return
    retried = type(f"Retried{pool.connection_class.__name__}",
                   (_RetriedHandshake, pool.connection_class), {})
    pool.connection_class = retried
    # redis-py keeps these two collections (pinned in pyproject); the class adds no state
    for conn in [*pool._available_connections, *pool._in_use_connections]:
        conn.__class__ = retried


# ARQ's enqueue_job, for many jobs in one round trip: a job whose id is queued, running or has
# a result already is left alone (ARQ's own check, WATCH + EXISTS + MULTI, is three round trips
# for each job). KEYS: the queue, then each job's key and result key; ARGV: four per job.
_ENQUEUE = """
local added = 0
for j = 1, (#KEYS - 1) / 2 do
    local job_key, result_key, a = KEYS[2 * j], KEYS[2 * j + 1], 4 * (j - 1)
    if redis.call('exists', job_key, result_key) == 0 then
        redis.call('psetex', job_key, ARGV[a + 3], ARGV[a + 4])
        redis.call('zadd', KEYS[1], ARGV[a + 2], ARGV[a + 1])
        added = added + 1
    end
end
return added
"""
_BATCH = 500  # jobs per script call: Redis runs a script alone, so keep each one short
_enqueue_script: AsyncScript | None = None


async def enqueue(arq: ArqRedis, queue_name: str, jobs: Iterable[PendingJob]) -> int:
    """Enqueue item jobs in ARQ's format; a job id already queued or running is left alone.
    The number enqueued now.

    Failure is logged, not raised: the rows are committed, and the reconciler enqueues what
    Redis does not hold.
    """
    global _enqueue_script
    if _enqueue_script is None:  # made once (it hashes the script); called with any client
        _enqueue_script = arq.register_script(_ENQUEUE)
    todo = list(jobs)
    added = 0
    try:
        for start in range(0, len(todo), _BATCH):
            keys, args = [queue_name], []
            for job in todo[start:start + _BATCH]:
                keys += [job_key_prefix + job.job_id, result_key_prefix + job.job_id]
                args += _job_args(arq, job)
            added += int(await _enqueue_script(keys, args, client=arq))
    except (RedisError, OSError) as exc:
        log.warning("enqueue failed; the reconciler will retry: %s", exc)
    return added


def _job_args(arq: ArqRedis, job: PendingJob) -> list[Any]:
    """ARGV for one job, as `ArqRedis.enqueue_job` would write it: id, score, expiry, body."""
    now = timestamp_ms()
    score = to_unix_ms(job.run_after) if isinstance(job.run_after, datetime) else now
    score = max(score, now)
    body = serialize_job(RUN_ITEM, (job.item_id,), {}, None, now, serializer=dumps)
    return [job.job_id, score, score - now + arq.expires_extra_ms, body]


async def depth(arq: ArqRedis, queue_name: str) -> int:
    """Item jobs queued (deferred retries included); ARQ's own cron jobs are not counted."""
    crons = 0
    async for _ in arq.zscan_iter(queue_name, match="cron:*", count=1000):
        crons += 1
    return int(await arq.zcard(queue_name)) - crons
