"""Query embeddings for the web process, computed by workers over Redis.

The offline model needs torch, which stays out of the web process. So `/search` puts its query
on a Redis list; whichever worker pops it embeds it with the model it already has loaded and
pushes the vector back. With an embeddings endpoint configured, the web process calls it
itself and this is not used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

from longtask.broker import keys as redis_keys
from longtask.core.errors import Unavailable
from longtask.pipeline.embed import Embedder

log = logging.getLogger(__name__)

# a worker that has just started loads its model first (10-20 s on 2 busy cores): a search
# waits that out rather than failing; a request nobody took within this long was given up on
WAIT_SECONDS = 30.0


class RemoteEmbedder:
    """An Embedder whose work a worker does."""

    def __init__(self, redis: Redis, model: str, timeout: float = WAIT_SECONDS) -> None:
        self._redis = redis
        self.model = model
        self._timeout = timeout

    async def embed(self, texts: list[str]) -> list[list[float]]:
        request_id = uuid.uuid4().hex
        await self._redis.rpush(redis_keys.EMBED_REQUESTS, json.dumps(
            {"id": request_id, "texts": texts, "model": self.model, "at": time.time()}))
        reply = await self._redis.blpop([redis_keys.embed_reply(request_id)], self._timeout)
        if reply is None:
            raise Unavailable("no worker answered the query embedding; is a worker running?",
                              code="no_worker", retry_after=5)
        body = json.loads(reply[1])
        if "error" in body:
            raise Unavailable(f"the worker could not embed the query: {body['error']}",
                              code="embedding_failed")
        return list(body["vectors"])


async def serve(redis: Redis, embedder: Embedder) -> None:
    """Answer query-embedding requests until cancelled (a worker background task)."""
    while True:
        try:
            popped = await redis.blpop([redis_keys.EMBED_REQUESTS], 5)
            if popped is None:
                continue
            request = json.loads(popped[1])
            if time.time() - request.get("at", 0) > WAIT_SECONDS:
                continue
            reply_key = redis_keys.embed_reply(request["id"])
            try:
                if request.get("model") != embedder.model:
                    raise ValueError(f"this worker embeds with {embedder.model}")
                body = {"vectors": await embedder.embed(list(request["texts"]))}
            except Exception as exc:
                body = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            async with redis.pipeline(transaction=True) as pipe:
                pipe.rpush(reply_key, json.dumps(body))
                pipe.expire(reply_key, 30)
                await pipe.execute()
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, ValueError, KeyError) as exc:
            log.warning("embedding service: %s", exc)
            await asyncio.sleep(1.0)
