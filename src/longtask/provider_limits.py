"""A rate limit toward the LLM provider, shared by every worker through Redis: requests and
tokens per window (moving windows of the limits library). A call waits for room instead of
sending a request the provider would answer with 429; a 429 that comes anyway is retried after
its Retry-After (pipeline.http)."""

from __future__ import annotations

import asyncio
import time

from arq import ArqRedis
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from longtask import redis_keys
from longtask.settings import Settings

MIN_WAIT = 0.05


class ProviderThrottle:
    """`wait(tokens)` returns once a request of that many tokens fits both limits."""

    def __init__(self, redis: ArqRedis, provider: str, requests: RateLimitItem,
                 tokens: RateLimitItem | None = None) -> None:
        storage = RedisStorage("async+redis://", implementation="redispy",
                               key_prefix=redis_keys.PROVIDER_LIMIT_PREFIX,
                               connection_pool=redis.connection_pool)
        self._limiter = MovingWindowRateLimiter(storage)
        self._provider = provider
        self._requests = requests
        self._tokens = tokens

    async def wait(self, tokens: int) -> None:
        while (blocked := await self._blocked(tokens)) is not None:
            limit, what = blocked
            stats = await self._limiter.get_window_stats(limit, self._provider, what)
            await asyncio.sleep(max(MIN_WAIT, stats.reset_time - time.time()))

    async def _blocked(self, tokens: int) -> tuple[RateLimitItem, str] | None:
        """The limit that has no room now, or None once both took this request."""
        if not await self._limiter.hit(self._requests, self._provider, "requests"):
            return self._requests, "requests"
        # a refused token hit has spent a request slot: fewer requests, never more
        if self._tokens is not None and not await self._limiter.hit(
                self._tokens, self._provider, "tokens", cost=min(tokens, self._tokens.amount)):
            return self._tokens, "tokens"
        return None


def throttle(settings: Settings, redis: ArqRedis) -> ProviderThrottle | None:
    """The shared limit the settings ask for (LONGTASK_LLM_RATE / _TOKEN_RATE), or None."""
    if not settings.llm_url or not settings.llm_rate:
        return None
    tokens = parse(settings.llm_token_rate) if settings.llm_token_rate else None
    return ProviderThrottle(redis, settings.llm_url, parse(settings.llm_rate), tokens)
