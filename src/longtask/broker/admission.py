"""Backpressure at the door: a per-tenant request rate (429), a per-tenant queue depth (429) and
a global one (503), each answered with `Retry-After`. The per-tenant cap on open tasks lives with
the task rows (`store.tasks`), where it can be counted in the same transaction.

A queue depth counts item jobs waiting their turn plus those on the ARQ queue (dispatched,
running included; see broker.fair). A tenant's own depth fills up before the global one (its
default is a tenth of it), so one tenant's backlog gets that tenant a 429 and leaves the others'
submits alone. A submit is refused only once the depth has reached the cap, so a batch may take
a tenant past it once: a batch larger than the cap could never go in otherwise.

The checks here need Redis. If Redis is away they let the request through: Postgres is the
record, and a task accepted now is enqueued by the reconciler once Redis is back.

Stream connects have a rate of their own, apart from requests (`stream`), and the scheduler's
firings pass the same checks as a submit.
"""

from __future__ import annotations

import logging
import math
import time

from arq import ArqRedis
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.exceptions import RedisError

from longtask.broker import fair
from longtask.broker import keys as redis_keys
from longtask.config import Settings
from longtask.core.errors import LimitReached, Unavailable

log = logging.getLogger(__name__)

QUEUE_FULL_RETRY_AFTER = 30  # seconds: a backlog of this size takes a while to drain
DEPTH_FRESH_SECONDS = 0.5  # a queue depth read this recently is reused while far from the cap
_TENANTS_REMEMBERED = 10_000  # tenant depths kept between reads, at most


class Admission:
    """One per web process; shares the ARQ Redis connection pool."""

    def __init__(self, settings: Settings, redis: ArqRedis) -> None:
        self._redis = redis
        self._queue = settings.queue_name
        self._max_depth = settings.max_queue_depth
        self._max_tenant_depth = settings.tenant_queue_depth if settings.fair_dispatch else 0
        self._rates: list[RateLimitItem] = parse_many(settings.rate_limit) \
            if settings.rate_limit else []
        self._stream_rates: list[RateLimitItem] = parse_many(settings.stream_rate) \
            if settings.stream_rate else []
        # the shared pool (a Sentinel one too): limits types its options as scalars, but hands
        # them to redis-py as they are
        storage = RedisStorage("async+redis://", implementation="redispy",
                               key_prefix=redis_keys.RATE_LIMIT_PREFIX,
                               connection_pool=redis.connection_pool)  # type: ignore[arg-type]
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._depth = 0  # the queue depth last read, plus what this process enqueued since
        self._depth_read_at = -math.inf
        self._tenants: dict[str, tuple[int, float]] = {}  # likewise per tenant, and when read

    async def request(self, tenant: str) -> None:
        """Count one request of `tenant`; LimitReached past its rate."""
        await self._hit(self._rates, (tenant,), "the rate limit")

    async def stream(self, tenant: str) -> None:
        """Count one stream connect of `tenant`, apart from its requests (a dashboard's watchers
        connecting at once must not use up its request rate); LimitReached past its rate."""
        await self._hit(self._stream_rates, ("streams", tenant), "the stream connect rate")

    async def _hit(self, rates: list[RateLimitItem], who: tuple[str, ...], what: str) -> None:
        for rate in rates:
            try:
                allowed = await self._limiter.hit(rate, *who)
                if allowed:
                    continue
                reset = (await self._limiter.get_window_stats(rate, *who)).reset_time
            except (RedisError, OSError) as exc:
                log.warning("%s not checked, Redis is away: %s", what, exc)
                return
            wait = max(1, math.ceil(reset - time.time()))
            raise LimitReached(f"over {what} of {rate} for this tenant; "
                               f"retry in {wait}s", code="rate_limited",
                               retry_after=wait)

    async def room_in_queue(self, tenant: str) -> None:
        """LimitReached while `tenant` has LONGTASK_TENANT_QUEUE_DEPTH jobs or more waiting or
        running; Unavailable while all tenants have LONGTASK_MAX_QUEUE_DEPTH.

        Far from the caps (under half of each), depths read in the last half second, plus this
        process's own jobs since, stand in for reading them again: a submit then costs no Redis
        round trip for them. Near a cap they are read every time, so the cap holds exactly there.
        """
        now = time.monotonic()
        mine, mine_read_at = self._tenants.get(tenant, (0, -math.inf))
        stale = now - min(self._depth_read_at, mine_read_at) > DEPTH_FRESH_SECONDS
        if stale or self._depth * 2 >= self._max_depth \
                or (self._max_tenant_depth and mine * 2 >= self._max_tenant_depth):
            try:
                total, own = await fair.depths(self._redis, self._queue, tenant)
            except (RedisError, OSError) as exc:
                log.warning("queue depth not checked, Redis is away: %s", exc)
                return
            if len(self._tenants) >= _TENANTS_REMEMBERED:
                self._tenants.clear()
            self._depth, self._depth_read_at = total.total, now
            mine = own.total
            self._tenants[tenant] = (mine, now)
        if self._max_tenant_depth and mine >= self._max_tenant_depth:
            raise LimitReached(f"this tenant has {mine} item jobs waiting or running, its limit "
                               f"({self._max_tenant_depth}); try again later",
                               code="tenant_queue_full", retry_after=QUEUE_FULL_RETRY_AFTER)
        if self._depth >= self._max_depth:
            raise Unavailable(f"the queue is full ({self._depth} jobs waiting); try again later",
                              code="queue_full",
                              retry_after=QUEUE_FULL_RETRY_AFTER)

    def enqueued(self, tenant: str, jobs: int) -> None:
        """Count jobs this process has just put on the queue for `tenant`."""
        self._depth += jobs
        if tenant in self._tenants:
            mine, read_at = self._tenants[tenant]
            self._tenants[tenant] = (mine + jobs, read_at)


async def depth(arq: ArqRedis, queue_name: str) -> int:
    """Item jobs waiting their turn or on the ARQ queue (running ones included); ARQ's own cron
    jobs are not counted."""
    return (await fair.depth(arq, queue_name)).total
