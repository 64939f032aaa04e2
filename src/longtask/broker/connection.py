"""The Redis connection shared by ARQ, the hub and the rate limits: from a REDIS_URL, with
retries that ride out a Redis restart or a Sentinel failover, and ARQ's wire format.

REDIS_URL is read here and nowhere else. Its forms:

    redis://[[user]:password@]host[:port][/db]         rediss://... (TLS)    unix:///path
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
    rediss+sentinel://...                               (TLS to the Sentinels and the servers)

A Sentinel URL lists the Sentinels (port 26379 unless given) and names the monitored service
(`sentinel monitor <service> ...`). Its password is the Redis servers' one; Sentinels that ask
for a password of their own get `?sentinel_password=...`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse, urlsplit

from arq import ArqRedis
from arq.connections import RedisSettings
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError, WatchError

from longtask.broker import sentinel
from longtask.core.errors import ConfigError

WORKER_RETRIES = 40  # about a minute of backoff: a worker rides out a Redis restart
WEB_RETRIES = 2  # a request should get its 503 quickly instead
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
SENTINEL_PORT = 26379
SENTINEL_FORM = "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]"


@dataclass
class SentinelSettings(RedisSettings):
    """RedisSettings of a Sentinel-managed primary: `host` lists the Sentinels,
    `sentinel_master` names the service."""

    sentinel_password: str | None = None


def redis_settings(url: str, retries: int = WEB_RETRIES) -> RedisSettings:
    """ARQ settings from a REDIS_URL (the forms are in this module's docstring); ConfigError
    naming REDIS_URL if it is not one of them. rediss:// accepts Heroku's self-signed
    certificate unless the URL says `?ssl_cert_reqs=required`. A command that meets a lost
    connection is retried with backoff (ARQ's own poll loop would die on it otherwise)."""
    scheme = url.partition("://")[0].lower()
    if scheme in SENTINEL_SCHEMES:
        settings: RedisSettings = _sentinel_settings(url, SENTINEL_SCHEMES[scheme])
    else:
        try:
            settings = RedisSettings.from_dsn(url)
        except (RuntimeError, ValueError) as exc:  # RuntimeError: arq's "invalid DSN scheme"
            raise ConfigError(f"REDIS_URL {_redacted(url)!r} is not a Redis URL ({exc}): use "
                              f"redis://, rediss://, unix:// or {SENTINEL_FORM}") from None
    settings.conn_timeout = 5
    settings.conn_retries = 2
    settings.retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries)
    settings.retry_on_error = [ConnectionError, TimeoutError, BusyLoadingError, OSError]
    if settings.ssl:
        wanted = parse_qs(urlparse(url).query).get("ssl_cert_reqs", ["none"])[0]
        settings.ssl_cert_reqs = wanted
    return settings


def pool(url: str, retries: int = WEB_RETRIES) -> ArqRedis:
    """An ARQ client on REDIS_URL that connects on first use; the worker's `redis_pool`.

    Built here rather than by ARQ's `create_pool`, whose Sentinel branch drops the retries,
    the timeouts and the TLS options. On a Sentinel URL every (re)connect asks the Sentinels
    for the primary, so the client follows a failover (see `broker.sentinel`)."""
    settings = redis_settings(url, retries)
    options: dict[str, Any] = dict(
        db=settings.database, username=settings.username, password=settings.password,
        socket_connect_timeout=settings.conn_timeout, retry=settings.retry,
        retry_on_error=settings.retry_on_error, max_connections=settings.max_connections)
    if settings.ssl:
        options.update(ssl_cert_reqs=settings.ssl_cert_reqs, ssl_ca_certs=settings.ssl_ca_certs,
                       ssl_ca_data=settings.ssl_ca_data, ssl_keyfile=settings.ssl_keyfile,
                       ssl_certfile=settings.ssl_certfile,
                       ssl_check_hostname=settings.ssl_check_hostname)
    if isinstance(settings, SentinelSettings):
        assert isinstance(settings.host, list)
        redis = sentinel.primary(settings.host, settings.sentinel_master, options,
                                 tls=settings.ssl, sentinel_password=settings.sentinel_password,
                                 timeout=settings.conn_timeout, redis_class=_Client)
    else:
        assert isinstance(settings.host, str)
        redis = _Client(host=settings.host, port=settings.port,
                        unix_socket_path=settings.unix_socket_path, ssl=settings.ssl,
                        **options)
    redis.job_serializer = dumps
    redis.job_deserializer = loads
    retry_handshakes(redis)
    return redis


def dumps(value: Any) -> bytes:
    """ARQ's wire format: JSON, not pickle (jobs carry ids; the rest lives in Postgres)."""
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def loads(raw: bytes) -> Any:
    return json.loads(raw)


async def connect(url: str, retries: int = WEB_RETRIES) -> ArqRedis:
    """`pool(url)`, once it answers a PING."""
    redis = pool(url, retries)
    try:
        await redis.ping()
    except BaseException:
        await redis.aclose()
        raise
    return redis


class _WatchPipeline(Pipeline):
    """A transaction whose connection drops between WATCH and MULTI fails at EXEC, with the
    WatchError its caller expects there, instead of at the read in between.

    redis-py raises WatchError from any command after a WATCH whose connection dropped. ARQ's
    worker reads two keys there (start_jobs: EXISTS, ZSCORE) outside its `except WatchError`,
    so a Redis restart at that moment ended the worker process. Here the read is answered on a
    new connection, and EXEC then fails as if the watched key had changed: ARQ skips the job
    for this poll, as it does when another worker took it, and finds it again at the next."""

    _dropped = False

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._dropped and not self.explicit_transaction:  # reads until MULTI, as if watching
            return self.immediate_execute_command(*args, **kwargs)
        return super().execute_command(*args, **kwargs)

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return await super().immediate_execute_command(*args, **options)
        except WatchError:  # the connection dropped while watching (the pipeline is reset)
            self._dropped = True
            return await super().immediate_execute_command(*args, **options)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self._dropped:
            await self.reset()  # which clears the flag
            raise WatchError("the connection dropped while watching; the transaction is off")
        return await super().execute(raise_on_error)

    async def reset(self) -> None:
        self._dropped = False
        await super().reset()


class _Client(ArqRedis):
    """ARQ's client, whose transactions are _WatchPipelines."""

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> _WatchPipeline:
        return _WatchPipeline(self.connection_pool, self.response_callbacks, transaction,
                              shard_hint)


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
            super().connect, lambda error: self.disconnect())  # type: ignore[misc,attr-defined]


def retry_handshakes(redis: ArqRedis) -> None:
    """Make the pool's connections retry their handshake when they (re)connect: the ones to
    come, and the ones it holds already (if it has pinged through one)."""
    pool = redis.connection_pool
    if issubclass(pool.connection_class, _RetriedHandshake):
        return
    retried = type(f"Retried{pool.connection_class.__name__}",
                   (_RetriedHandshake, pool.connection_class), {})
    pool.connection_class = retried
    # redis-py keeps these two collections (pinned in pyproject); the class adds no state
    for conn in [*pool._available_connections, *pool._in_use_connections]:
        conn.__class__ = retried


def _sentinel_settings(url: str, tls: bool) -> SentinelSettings:
    shown = _redacted(url)

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"REDIS_URL {shown!r}: {problem}; the form is {SENTINEL_FORM}")

    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise bad(str(exc)) from None
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = [_address(host, bad) for host in hosts.split(",")]
    path = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if not path or not 1 <= len(path) <= 2:
        raise bad("name the monitored service after the Sentinels (`/mymaster`), then the "
                  "database number if not 0")
    database = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise bad(f"the database must be a number, not {path[1]!r}")
        database = int(path[1])
    query = parse_qs(parts.query, keep_blank_values=True)
    known = ["sentinel_password", *(["ssl_cert_reqs"] if tls else [])]
    unknown = sorted(set(query) - set(known))
    if unknown:
        hint = "; TLS needs rediss+sentinel://" if "ssl_cert_reqs" in unknown else ""
        raise bad(f"unknown option {', '.join(unknown)} (known: {', '.join(known)}{hint})")
    return SentinelSettings(
        host=sentinels, sentinel=True, sentinel_master=unquote(path[0]), database=database,
        username=unquote(username) or None, password=unquote(password) or None, ssl=tls,
        sentinel_password=query.get("sentinel_password", [""])[0] or None)


def _address(text: str, bad: Callable[[str], ConfigError]) -> tuple[str, int]:
    """`host`, `host:port` or `[v6 address]:port` of one Sentinel."""
    host, port = text.strip(), str(SENTINEL_PORT)
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise bad(f"cannot read the Sentinel address {text!r}")
            port = rest[1:]
    elif ":" in host:
        host, _, port = host.rpartition(":")
    if not host:
        raise bad(f"a Sentinel address has no host ({text!r})" if text.strip()
                  else "list the Sentinels, comma-separated")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise bad(f"the Sentinel address {text!r} has no valid port")
    return host, int(port)


def _redacted(url: str) -> str:
    """The URL without its passwords, fit for an error message or a log."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    tail = re.sub(r"(sentinel_password=)[^&]*", r"\1***", tail)
    return f"{scheme}://{netloc}{tail}"
