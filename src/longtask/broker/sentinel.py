"""A client of whichever Redis server the Sentinels call the primary now: it follows a failover.

redis-py asks the Sentinels for the primary once per connect and then retries the TCP connect to
that address, so after a failover a retried connect knocks on the dead primary until its retries
run out (a worker's take a minute). Here every attempt asks the Sentinels again. The rest is
redis-py's `SentinelManagedConnection`: a connection that meets READONLY (its server has been
made a replica) is dropped and its command fails as a ConnectionError, which the client's retry
sends again over a new connection, to the primary the Sentinels name now. A server the Sentinels
demote also drops its clients (`CLIENT KILL` as part of the switch), and those reconnect alike.
"""

from __future__ import annotations

from typing import Any

from arq import ArqRedis
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection


class PrimaryConnection(SentinelManagedConnection):
    """A connection to the primary the Sentinels name at each attempt to connect."""

    async def connect(self) -> None:
        # the plain connect (a retried `_connect`, then the handshake), without the retry loop
        # redis-py's Sentinel connection puts around it: retries of retries, and the command's
        # own retry comes around to connect again anyway
        await AbstractConnection.connect(self)  # type: ignore[no-untyped-call]

    async def _connect(self) -> None:
        # each attempt of the retried connect: the primary now, then a TCP connection to it
        self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # type: ignore[no-untyped-call]


class PrimarySSLConnection(PrimaryConnection, SSLConnection):
    pass


class PrimaryPool(SentinelConnectionPool):
    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the client is closing (a new primary closes idle ones only)
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.connection_pool.disconnect()


def primary(sentinels: list[tuple[str, int]], service: str, options: dict[str, Any], *,
            tls: bool, sentinel_password: str | None, timeout: float,
            redis_class: type[ArqRedis] = ArqRedis) -> ArqRedis:
    """A `redis_class` on the primary of `service`, found through `sentinels`; `options` are the
    connection's (database, credentials, retries, TLS options). The Sentinels are asked with
    the same TLS options, their own password if any, and `timeout`: one that does not answer
    is skipped for the next."""
    sentinel_options: dict[str, Any] = {
        "password": sentinel_password, "socket_connect_timeout": timeout,
        "socket_timeout": timeout, "ssl": tls,
        **{k: v for k, v in options.items() if k.startswith("ssl_")},
    }
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_options,  # type: ignore[no-untyped-call]
                       **options)
    redis: ArqRedis = manager.master_for(
        service, redis_class=redis_class, connection_pool_class=PrimaryPool,
        connection_class=PrimarySSLConnection if tls else PrimaryConnection)
    return redis
