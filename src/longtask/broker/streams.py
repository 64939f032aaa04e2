"""Open event streams per tenant, counted in Redis across every web process.

Each open stream (SSE or WebSocket) holds a lease: a member of the tenant's sorted set, scored by
the time it runs out. The web process that holds it renews all of its leases every
`RENEW_SECONDS`; a stream that ends gives its lease back at once. A web process that is killed
renews nothing, so its streams stop counting within `LEASE_SECONDS`: no count leaks for good.
Times are Redis's own (`TIME` in the scripts), so web machines' clocks may disagree.

If Redis is away a stream is let through, as the rate limits do: its lease is kept here and
counted from the next renewal that reaches Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from arq import ArqRedis
from redis.exceptions import RedisError

from longtask.broker import keys as redis_keys
from longtask.core.errors import LimitReached

log = logging.getLogger(__name__)

LEASE_SECONDS = 60  # a stream that nobody renews stops counting after this
RENEW_SECONDS = 20  # how often a web process renews its streams' leases
RETRY_AFTER = 10  # seconds: streams end as their tasks do; come back and see
_BATCH = 1000  # leases renewed per script call

# KEYS[1] the tenant's leases; ARGV lease seconds, most open, the new lease. Returns the streams
# open with this one, or minus those open when there is no room.
_OPEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local open = redis.call('ZCARD', KEYS[1])
if open >= tonumber(ARGV[2]) then return -open end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return open + 1
"""

# KEYS[1] the tenant's leases; ARGV lease seconds, then the leases to renew (added back if they
# were lost: a stream open here is open, whatever Redis forgot)
_RENEW = """
local t = redis.call('TIME')
local expires = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expires, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return #ARGV - 1
"""


class Lease:
    """One open stream's place in its tenant's count; `close` gives it back (idempotent)."""

    def __init__(self, owner: OpenStreams, tenant: str, ident: str) -> None:
        self._owner, self.tenant, self.ident = owner, tenant, ident
        self.closed = False

    def close(self) -> None:
        """Give the place back. Synchronous, so it can run in a `finally` of a cancelled stream:
        the Redis call goes on in the background (and the lease runs out regardless)."""
        if not self.closed:
            self.closed = True
            self._owner.release(self)


class OpenStreams:
    """One per web process: opens leases, renews the ones it holds, gives them back."""

    def __init__(self, redis: ArqRedis, max_per_tenant: int,
                 lease_seconds: int = LEASE_SECONDS) -> None:
        self._redis = redis
        self._max = max_per_tenant
        self._lease = lease_seconds
        self._open = redis.register_script(_OPEN)
        self._renew = redis.register_script(_RENEW)
        self._held: dict[str, set[str]] = {}  # tenant -> lease ids held by this process
        self._chores: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_forever())

    async def stop(self) -> None:
        """Stop renewing and give back every lease still held (the process is going away)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        held, self._held = self._held, {}
        with contextlib.suppress(RedisError, OSError):
            for tenant, idents in held.items():
                if idents:
                    await self._redis.zrem(redis_keys.open_streams(tenant), *idents)
        if self._chores:
            await asyncio.gather(*self._chores, return_exceptions=True)

    async def open(self, tenant: str) -> Lease:
        """A lease for one more stream of `tenant`; LimitReached when it has its most open."""
        ident = uuid.uuid4().hex
        try:
            result = int(await self._open(keys=[redis_keys.open_streams(tenant)],
                                          args=[self._lease, self._max, ident]))
        except (RedisError, OSError) as exc:
            log.warning("open streams not counted, Redis is away: %s", exc)
            result = 1
        if result < 0:
            raise LimitReached(
                f"this tenant has {-result} event streams open, its limit; close some, or "
                f"retry in {RETRY_AFTER}s", code="too_many_streams", retry_after=RETRY_AFTER)
        self._held.setdefault(tenant, set()).add(ident)
        return Lease(self, tenant, ident)

    def held(self) -> int:
        """Leases this process holds."""
        return sum(len(idents) for idents in self._held.values())

    def release(self, lease: Lease) -> None:
        idents = self._held.get(lease.tenant)
        if idents is None or lease.ident not in idents:
            return
        idents.discard(lease.ident)
        if not idents:
            del self._held[lease.tenant]
        chore = asyncio.create_task(self._give_back(lease))
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)

    async def renew(self) -> None:
        """Renew every lease this process holds (`RENEW_SECONDS` apart; tests call it too)."""
        for tenant, idents in list(self._held.items()):
            key, batch = redis_keys.open_streams(tenant), list(idents)
            for start in range(0, len(batch), _BATCH):
                await self._renew(keys=[key],
                                  args=[self._lease, *batch[start:start + _BATCH]])

    async def _give_back(self, lease: Lease) -> None:
        try:
            await self._redis.zrem(redis_keys.open_streams(lease.tenant), lease.ident)
        except (RedisError, OSError) as exc:  # it runs out by itself
            log.warning("stream lease not given back, Redis is away: %s", exc)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self.renew()
            except (RedisError, OSError) as exc:
                log.warning("stream leases not renewed, Redis is away: %s", exc)
