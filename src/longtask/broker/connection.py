"""The Redis connection shared by ARQ, the hub and the rate limits: from a REDIS_URL, with
retries that ride out a Redis restart, and ARQ's wire format."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlparse

from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

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
