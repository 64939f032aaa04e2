"""A rate limit toward the LLM provider, shared by every worker through Redis: requests and
tokens per window (moving windows of the limits library). A call waits for room instead of
sending a request the provider would answer with 429. A 429 (or 503) that comes anyway with a
Retry-After pauses every worker's calls to that provider for that long, not only the call that
got it, which is retried after it (pipeline.http)."""

from __future__ import annotations

import asyncio
import time

from arq import ArqRedis
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from longtask.broker import keys as redis_keys
from longtask.config import Settings

MIN_WAIT = 0.05


class ProviderThrottle:
    """`wait(tokens)` returns once a request of that many tokens fits both limits."""

    def __init__(self, redis: ArqRedis, provider: str, requests: RateLimitItem | None = None,
                 tokens: RateLimitItem | None = None) -> None:
        self._redis = redis
        self._paused = f"{redis_keys.PROVIDER_LIMIT_PREFIX}:paused:{provider}"
        storage = RedisStorage("async+redis://", implementation="redispy",
                               key_prefix=redis_keys.PROVIDER_LIMIT_PREFIX,
                               connection_pool=redis.connection_pool)
        self._limiter = MovingWindowRateLimiter(storage)
        self._provider = provider
        self._requests = requests
        self._tokens = tokens

    async def wait(self, tokens: int) -> None:
        while (left := await self._redis.pttl(self._paused)) > 0:
            await asyncio.sleep(left / 1000)
        while (blocked := await self._blocked(tokens)) is not None:
            limit, what = blocked
            stats = await self._limiter.get_window_stats(limit, self._provider, what)
            await asyncio.sleep(max(MIN_WAIT, stats.reset_time - time.time()))

    async def pause(self, seconds: float) -> None:
        """The provider asked to wait `seconds` (Retry-After): no worker sends it anything
        before then. A longer pause already set stands."""
        ms = max(1, round(seconds * 1000))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._paused, 1, px=ms, nx=True)
            pipe.pexpire(self._paused, ms, gt=True)
            await pipe.execute()

    async def _blocked(self, tokens: int) -> tuple[RateLimitItem, str] | None:
        """The limit that has no room now, or None once both took this request."""
        if self._requests is not None and not await self._limiter.hit(
                self._requests, self._provider, "requests"):
            return self._requests, "requests"
        # a refused token hit has spent a request slot: fewer requests, never more
        if self._tokens is not None and not await self._limiter.hit(
                self._tokens, self._provider, "tokens", cost=min(tokens, self._tokens.amount)):
            return self._tokens, "tokens"
        return None


def throttle(settings: Settings, redis: ArqRedis) -> ProviderThrottle | None:
    """The shared limit toward the configured LLM (LONGTASK_LLM_RATE / _TOKEN_RATE, if set; the
    shared pause on Retry-After always); None without an LLM."""
    if not settings.llm_url:
        return None
    requests = parse(settings.llm_rate) if settings.llm_rate else None
    tokens = parse(settings.llm_token_rate) if settings.llm_token_rate else None
    return ProviderThrottle(redis, settings.llm_url, requests, tokens)
