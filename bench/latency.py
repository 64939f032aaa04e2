"""Event latency: a worker emits a progress event -> an SSE client receives it.

    .venv/bin/python -m bench.latency [--events 10000] [--interval 0.002]

One task of kind `bench.emit` emits `--events` progress events, one every `--interval` seconds,
each stamped with the wall-clock time of the emit (before its row is written); one SSE client on
loopback notes when each arrives. The task waits for a gate until the stream is open, so no event
is replayed from Postgres. Baseline: a bare Redis PUBLISH from another process to a SUBSCRIBE in
this one, same count and pace, on the same Redis.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx
from redis.asyncio import Redis

from bench._report import Report, cli
from bench._stack import Stack, percentile, submit

CHANNEL = "bench:latency"


async def sse_latencies(client: httpx.AsyncClient, task_id: str, events: int,
                        opened: asyncio.Event) -> list[float]:
    """Seconds from each progress event's stamp to its arrival, over one SSE stream."""
    latencies: list[float] = []
    async with client.stream("GET", f"/tasks/{task_id}/events") as response:
        response.raise_for_status()
        opened.set()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                now = time.time()
                data = json.loads(line[5:])
                if "t" in data:
                    latencies.append(now - data["t"])
                    if len(latencies) >= events:
                        break
    return latencies


async def pubsub_latencies(redis_url: str, events: int, interval: float) -> list[float]:
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.latency", "--publish", redis_url, str(events), str(interval))
    latencies: list[float] = []
    async for message in pubsub.listen():
        latencies.append(time.time() - json.loads(message["data"])["t"])
        if len(latencies) >= events:
            break
    await publisher.wait()
    await pubsub.aclose()
    await redis.aclose()
    return latencies


async def publish(redis_url: str, events: int, interval: float) -> None:
    """The baseline's publisher (its own process, like the worker)."""
    redis = Redis.from_url(redis_url)
    await asyncio.sleep(0.5)  # the subscriber is listening by now
    started = time.monotonic()
    for n in range(1, events + 1):
        await redis.publish(CHANNEL, json.dumps({"n": n, "t": time.time()}))
        await asyncio.sleep(max(0.0, started + n * interval - time.monotonic()))
    await redis.aclose()


async def run(report: Report, events: int, interval: float) -> None:
    async with Stack() as stack:
        assert stack.redis is not None
        web = await stack.web("web")
        await stack.workers(1, "worker")
        base = await pubsub_latencies(stack.redis_url, events, interval)
        async with stack.client(web) as client:
            gate = "bench:gate"
            task = await submit(client, "bench.emit",
                                {"events": events, "interval": interval, "gate": gate})
            opened = asyncio.Event()
            reader = asyncio.create_task(sse_latencies(client, task["id"], events, opened))
            await opened.wait()
            await stack.redis.set(gate, 1)
            latencies = await asyncio.wait_for(reader, timeout=max(120, events * interval * 5))

    for q, target in ((50, 5), (99, 50)):
        value, baseline = percentile(latencies, q) * 1000, percentile(base, q) * 1000
        report.add(f"emit -> SSE p{q}", value, "ms", baseline=baseline,
                   baseline_name="bare Redis pub/sub", target=f"< {target} ms", met=value < target)
    report.add("emit -> SSE max", max(latencies) * 1000, "ms", baseline=max(base) * 1000,
               baseline_name="bare Redis pub/sub")
    report.note(f"{len(latencies)} events, one every {interval * 1000:g} ms, one task, one stream; "
                "the latency includes the event's Postgres write (UPDATE + INSERT, one commit)")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--publish":  # the baseline's publisher process
        asyncio.run(publish(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
        return
    cli("bench.latency", "3. Event latency", __doc__, run, events=10_000, interval=0.002)


if __name__ == "__main__":
    main()
