"""A bare ARQ worker, the baseline of the per-task overhead: the same ARQ settings as longtask's
worker (concurrency, poll delay, JSON wire format, kept results), and a job that does nothing.

    BENCH_QUEUE=... REDIS_URL=... LONGTASK_WORKER_CONCURRENCY=16 arq bench.bare.WorkerSettings
"""

from __future__ import annotations

import os
from typing import Any

from arq.worker import func

from longtask import config
from longtask.broker import connection, queue


async def noop(ctx: dict[str, Any], *args: Any) -> None:
    return None


class WorkerSettings:
    functions = [func(noop, name=queue.RUN_ITEM)]
    redis_settings = connection.redis_settings(os.environ["REDIS_URL"], connection.WORKER_RETRIES)
    queue_name = os.environ["BENCH_QUEUE"]
    max_jobs = config.read("LONGTASK_WORKER_CONCURRENCY")  # longtask's own default and check
    keep_result = 60
    max_tries = 100
    poll_delay = 0.05
    allow_abort_jobs = True
    job_serializer = staticmethod(connection.dumps)
    job_deserializer = staticmethod(connection.loads)
    health_check_interval = 10
