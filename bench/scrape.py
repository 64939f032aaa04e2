"""/metrics under scraping: `GET /tasks` latency while scrapers hammer `/metrics`, against the
same latency with nobody scraping, in the same run and on the same web process.

    .venv/bin/python -m bench.scrape [--scrapers 50] [--requests 400] [--tasks 200000]

Postgres holds `tasks` ended tasks of other tenants (the aggregate a scrape reads covers every
tenant). Two web processes are measured one after the other: the default, which reads the
scrape-time figures at most once per LONGTASK_METRICS_REFRESH_SECONDS (10 s), and one that reads
them at every scrape (0), as `/metrics` did before issue 17.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from bench._report import Report, cli
from bench._stack import Stack, percentile

TOKEN = "bench-metrics-token"
KINDS = ("ingest", "agent", "generate", "demo", "noop")


async def latencies(client: httpx.AsyncClient, requests: int) -> list[float]:
    """`GET /tasks` one after the other, as one user's page would; seconds each."""
    found = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = await client.get("/tasks", params={"limit": 20})
        found.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
    return found


async def under_scraping(client: httpx.AsyncClient, url: str, scrapers: int,
                         requests: int) -> tuple[list[float], float]:
    """`latencies` while `scrapers` scrapes of `url` start at once, every second (a Prometheus
    scrapes a target every 15 s or so): (latencies, scrapes answered per second)."""
    done = asyncio.Event()
    scrapes = 0

    async def bursts() -> None:
        nonlocal scrapes
        limits = httpx.Limits(max_connections=scrapers)
        async with httpx.AsyncClient(timeout=60, limits=limits,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as own:
            while not done.is_set():
                started = time.perf_counter()
                answers = await asyncio.gather(*(own.get(url) for _ in range(scrapers)))
                assert all(a.status_code == 200 for a in answers), answers[0].text
                scrapes += len(answers)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 1 - (time.perf_counter() - started))

    loop = asyncio.create_task(bursts())
    started = time.perf_counter()
    try:
        found = await latencies(client, requests)
    finally:
        done.set()
        await loop
    return found, scrapes / (time.perf_counter() - started)


async def run(report: Report, scrapers: int, requests: int, tasks: int) -> None:
    async with Stack() as stack:
        assert stack.pool is not None
        await stack.pool.execute(
            "INSERT INTO tasks (tenant, kind, status, finished_at)"
            " SELECT 'other-' || (n % 50), ($2::text[])[1 + n % 5], 'completed', now()"
            " FROM generate_series(1, $1) AS n", tasks, list(KINDS))
        await stack.analyze()
        for refresh, name in (("10", "cached (10 s)"), ("0", "read at every scrape")):
            web = await stack.web(f"web-{refresh}", LONGTASK_METRICS_TOKEN=TOKEN,
                                  LONGTASK_METRICS_REFRESH_SECONDS=refresh)
            async with stack.client(web) as client:
                await latencies(client, 50)  # warm up
                idle = await latencies(client, requests)
                busy, rate = await under_scraping(client, f"{web.url}/metrics", scrapers,
                                                  requests)
            stack.stop(web)
            idle_p50, idle_p99 = percentile(idle, 50) * 1000, percentile(idle, 99) * 1000
            p50, p99 = percentile(busy, 50) * 1000, percentile(busy, 99) * 1000
            report.add(f"GET /tasks p50, {scrapers} scrapers, {name}", p50, "ms",
                       baseline=idle_p50, baseline_name="no scraper",
                       target="within 2x of idle" if refresh == "10" else "",
                       met=p50 <= 2 * idle_p50 if refresh == "10" else None)
            report.add(f"GET /tasks p99, {scrapers} scrapers, {name}", p99, "ms",
                       baseline=idle_p99, baseline_name="no scraper")
            report.add(f"scrapes answered, {name}", rate, "scrapes/s")
    report.note(f"{tasks} ended tasks of 50 other tenants in Postgres; `GET /tasks` one at a "
                f"time, {requests} each way; {scrapers} scrapes at once every second from this "
                "process, which shares the 2 cores with the web process, Postgres and Redis")


def main() -> None:
    cli("bench.scrape", "Scrapes of /metrics", __doc__, run, scrapers=50, requests=400,
        tasks=200_000)


if __name__ == "__main__":
    main()
