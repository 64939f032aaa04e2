"""Workers' metrics on their way to the web processes. A worker dyno takes no inbound connection,
so Prometheus cannot scrape it: each worker puts what its registry holds in Redis every few
seconds, with a TTL, and every web process's /metrics serves what the live ones put there. What a
stopped worker last put stays until the TTL ends, so its final counts get scraped."""

from __future__ import annotations

from redis.asyncio import Redis

from longtask.broker import keys as redis_keys


async def publish(redis: Redis, queue: str, worker_id: str, dumped: str, ttl: float) -> None:
    """Put one worker's metrics (`dumped`, opaque here) where `read` finds them for `ttl` s."""
    ttl_ms = max(1, int(ttl * 1000))
    index = redis_keys.worker_metrics_index(queue)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(redis_keys.worker_metrics(queue, worker_id), dumped, px=ttl_ms)
        pipe.sadd(index, worker_id)
        pipe.pexpire(index, ttl_ms)  # the index goes too once no worker of the queue publishes
        await pipe.execute()


async def read(redis: Redis, queue: str) -> dict[str, bytes]:
    """Worker id -> what it published, for every worker of `queue` whose metrics are still
    there; the ids of the expired ones leave the index (a worker that publishes again is put
    back by its next `publish`)."""
    index = redis_keys.worker_metrics_index(queue)
    workers = sorted(m.decode() if isinstance(m, bytes) else str(m)
                     for m in await redis.smembers(index))
    if not workers:
        return {}
    found = await redis.mget([redis_keys.worker_metrics(queue, w) for w in workers])
    gone = [w for w, value in zip(workers, found, strict=True) if value is None]
    if gone:
        await redis.srem(index, *gone)
    return {w: value for w, value in zip(workers, found, strict=True) if value is not None}
