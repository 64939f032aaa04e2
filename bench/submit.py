"""Submit: POST /tasks from concurrent clients vs bare ARQ `enqueue_job` on the same Redis.

    .venv/bin/python -m bench.submit [--clients 50] [--requests 3000]

Both sides run the same number of calls from the same number of concurrent coroutines in this
process: the service's clients over HTTP (kind `noop`, no worker running, so the queue only
grows), the baseline straight into Redis with longtask's own ARQ connection settings.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench._http import Connection
from bench._report import Report, cli
from bench._stack import Stack, percentile
from longtask.broker import connection, queue


async def hammer(call: Callable[[int], Awaitable[object]], clients: int,
                 requests: int) -> tuple[float, list[float]]:
    """Run `requests` calls from `clients` concurrent loops, each given its loop's number:
    (calls per second, latencies in seconds)."""
    latencies: list[float] = []
    left = iter(range(requests))

    async def client(n: int) -> None:
        for _ in left:
            started = time.perf_counter()
            await call(n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return requests / (time.perf_counter() - started), latencies


async def post_tasks(url: str, key: str, clients: int, requests: int, kind: str = "noop",
                     ids: list[str] | None = None, params: Any = None) -> tuple[float, list[float]]:
    """POST /tasks `requests` times from `clients` keep-alive connections."""
    connections = [Connection(url, key) for _ in range(clients)]
    for c in connections:
        await c.__aenter__()

    async def one(n: int) -> None:
        status, body = await connections[n].request("POST", "/tasks",
                                                      {"kind": kind, "params": params})
        if status != 202:
            raise RuntimeError(f"POST /tasks answered {status}: {body}")
        if ids is not None:
            ids.append(body["id"])

    try:
        return await hammer(one, clients, requests)
    finally:
        for c in connections:
            await c.__aexit__()


async def run(report: Report, clients: int, requests: int) -> None:
    async with Stack() as stack:
        web = await stack.web("web", LONGTASK_QUEUE="bench:submit")
        arq = await connection.connect(stack.redis_url)
        await post_tasks(web.url, stack.key, clients, min(200, requests))  # warm up
        await stack.analyze()

        async def bare(n: int) -> object:
            return await arq.enqueue_job(queue.RUN_ITEM, str(uuid.uuid4()),
                                         _job_id=str(uuid.uuid4()), _queue_name="bench:bare")

        await hammer(bare, clients, min(200, requests))
        base_rate, base_lat = await hammer(bare, clients, requests)
        rate, lat = await post_tasks(web.url, stack.key, clients, requests)
        await arq.aclose()

    base_p50, base_p99 = percentile(base_lat, 50) * 1000, percentile(base_lat, 99) * 1000
    p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
    bare_name = "bare enqueue_job"
    report.add("submit throughput", rate, "req/s", baseline=base_rate, baseline_name=bare_name,
               target=">= 40% of bare enqueue rate", met=rate >= 0.4 * base_rate)
    report.add("submit latency p50", p50, "ms", baseline=base_p50, baseline_name=bare_name)
    report.add("submit latency p99", p99, "ms", baseline=base_p99, baseline_name=bare_name,
               target="< 20 ms", met=p99 < 20)
    report.note(f"{clients} concurrent clients, {requests} calls each side, after a warm-up; "
                "the clients share the machine's 2 cores with the web process")


def main() -> None:
    cli("bench.submit", "1. Submit", __doc__, run, clients=50, requests=3000)


if __name__ == "__main__":
    main()
