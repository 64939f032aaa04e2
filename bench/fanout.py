"""Fan-out, as a cost per open stream: many SSE streams on one web process (then on several),
watching tasks that emit progress events at a fixed total rate.

    .venv/bin/python -m bench.fanout [--tasks 1000] [--rate 1000] [--streams 1000,5000,10000]
                                     [--webs 1,2] [--clients 4] [--window-seconds 15]

One worker runs `--tasks` tasks of kind `bench.emit`, each emitting a progress event every
tasks/rate seconds (`--rate` events a second in all), stamped with the time of the emit. For
each number of web processes in `--webs`, and each size in `--streams` (streams in all, spread
evenly over the web processes and over the tasks), the streams are opened, each resuming after
its task's newest event (`Last-Event-ID`, as a reconnecting browser does; from 0 each would
replay minutes of history first). Once all are open, every event emitted during
`--window-seconds` is followed to every stream of its task: delivered vs expected (the events
Postgres holds for that window, times the task's streams), delivery latency (arrival - emit),
the web processes' RSS per stream (RSS open - RSS with no stream, / streams), their CPU per
delivered event, Postgres transactions and tuples read per second (pg_stat_database deltas)
against the same window with no stream open. The streams are held by `--clients` processes
(bench/_sse_clients.py), whose CPU is reported so a reader can tell whether they set the pace.
"""

from __future__ import annotations

import asyncio
import os
import time

from bench._report import Report, cli
from bench._sse_clients import Clients, Seen, Spec
from bench._stack import Stack, cpu_by_process, percentile, proc_status, raise_fd_limit
from bench.submit import post_tasks
from tests.support import Web, wait_for

OPEN_SECONDS = 180  # a size whose streams are not all open by then is reported as not reached
DRAIN_SECONDS = 5  # an event of the window not received this long after its end is lost
# one tenant holds every stream and every emitting task: its caps must not be what is measured
ONE_TENANT = {"LONGTASK_TENANT_CONCURRENCY": "0", "LONGTASK_MAX_STREAMS": "1000000",
              "LONGTASK_STREAM_RATE": "off"}


class Probe:
    """CPU of every process (web-N, worker, postgres, redis, clients) and Postgres counters."""

    def __init__(self, stack: Stack, pids: dict[str, int], clients: Clients) -> None:
        self.stack, self.pids, self.clients = stack, pids, clients

    async def read(self) -> dict[str, float]:
        cpu = cpu_by_process(self.stack, self.pids)
        del cpu["bench client"]  # the parent only waits; the client processes hold the streams
        for n, used in enumerate(self.clients.cpu()):
            cpu[f"client-{n}"] = used
        return {**await self.stack.pg_counters(), **{f"{k}_cpu": v for k, v in cpu.items()}}


def per_second(before: dict[str, float], after: dict[str, float], elapsed: float
               ) -> dict[str, float]:
    return {k: (after[k] - before[k]) / elapsed for k in before}


def cores(counters: dict[str, float], prefix: str = "") -> dict[str, float]:
    """process -> cores it kept busy, for processes whose name starts with `prefix`."""
    return {k.removesuffix("_cpu"): v for k, v in counters.items()
            if k.endswith("_cpu") and k.startswith(prefix)}


async def window(stack: Stack, probe: Probe, clients: Clients, seconds: float
                 ) -> tuple[dict[str, float], Seen, dict[str, int]]:
    """Counters per second over `seconds`; what the streams received of the events emitted
    meanwhile (waiting DRAIN_SECONDS for the late ones); the events emitted, by task."""
    assert stack.pool is not None
    await clients.start()
    before = await probe.read()
    started, w0 = time.monotonic(), time.time()
    await asyncio.sleep(seconds)
    after = await probe.read()
    elapsed, w1 = time.monotonic() - started, time.time()
    await asyncio.sleep(DRAIN_SECONDS)
    seen = await clients.stop(w0, w1)
    emitted = {str(r["task_id"]): r["n"] for r in await stack.pool.fetch(
        "SELECT task_id, count(*) AS n FROM task_events WHERE type = 'progress'"
        " AND (data->>'t')::float8 >= $1 AND (data->>'t')::float8 < $2 GROUP BY task_id",
        w0, w1)}
    return per_second(before, after, elapsed), seen, emitted


async def run(report: Report, tasks: int, rate: float, streams: str, webs: str, clients: int,
              window_seconds: float) -> None:
    sizes = [int(s) for s in streams.split(",") if s]
    limit = raise_fd_limit()
    if max(sizes) + 200 > limit:
        report.note(f"open-file limit {limit}: sizes above {limit - 200} were left out")
        sizes = [s for s in sizes if s + 200 <= limit]
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    async with Stack() as stack, Clients(clients) as held:
        assert stack.pool is not None
        pool = stack.pool
        first = await stack.web("web-0", **ONE_TENANT)
        worker = (await stack.workers(1, "worker", LONGTASK_WORKER_CONCURRENCY=str(tasks + 16),
                                      LONGTASK_DB_POOL_MAX="20", **ONE_TENANT))[0]
        ids: list[str] = []
        await post_tasks(first.url, stack.key, 50, tasks, kind="bench.emit", ids=ids,
                         params={"events": 1_000_000, "interval": tasks / rate})

        async def all_running() -> bool:
            running = await pool.fetchval("SELECT count(*) FROM tasks WHERE status = 'running'")
            return bool(running == tasks)

        await wait_for(all_running, 120, f"{tasks} emitting tasks to run", interval=0.5)
        await stack.analyze()
        await asyncio.sleep(3)
        stack.stop(first)
        lost = 0
        for count in [int(w) for w in webs.split(",") if w]:
            # new processes for each count: RSS and CPU start from a web that held no stream
            procs = [await stack.web(f"web-{n}", **ONE_TENANT) for n in range(count)]
            await measure(report, stack, held, procs, worker.pid, ids, sizes, window_seconds,
                          rate)
            for web in procs:
                lost += web.tail(100_000).count("event hub lost Redis")
                stack.stop(web)
        report.note(f"{tasks} tasks x {rate / tasks:g} event/s = {rate:,.0f} events/s; window "
                    f"{window_seconds:g} s per size, then {DRAIN_SECONDS} s for late events; "
                    f"{clients} client processes hold the streams")
        report.note("the machine's 2 cores are shared by the web, the emitting worker, "
                    "Postgres, Redis and the client processes (and, in a busy session, other "
                    "engineers' tests): absolute figures are noisy, the per-stream and "
                    "per-event figures and the ratios to the no-stream window less so; load "
                    f"average at the start {load}, at the end " +
                    " ".join(f"{v:.1f}" for v in os.getloadavg()))
        report.note(f"the web processes' pub/sub connections to Redis dropped {lost} time(s) "
                    "(each drop makes every open stream catch up from Postgres)")


async def measure(report: Report, stack: Stack, held: Clients, webs: list[Web], worker: int,
                  ids: list[str], sizes: list[int], seconds: float, rate: float) -> None:
    """Every size on these web processes, smallest first, until one does not open."""
    assert stack.pool is not None
    pids = {web.name: web.pid for web in webs} | {"worker": worker}
    probe = Probe(stack, pids, held)
    on = f"{len(webs)} web" if len(webs) == 1 else f"{len(webs)} webs"
    idle, _, _ = await window(stack, probe, held, seconds)
    rss_idle = {web.name: proc_status(web.pid, "VmRSS") for web in webs}
    web_idle = sum(cores(idle, "web").values())
    report.add(f"{on}: Postgres xact/s, no streams", idle["xact_commit"], "xact/s")
    for size in sizes:
        name = f"{size:,} streams on {on}"
        resume = {str(r["id"]): r["last_seq"] for r in await stack.pool.fetch(
            "SELECT id, last_seq FROM tasks WHERE id = any($1::uuid[])", ids)}
        specs: list[Spec] = [(webs[n % len(webs)].port, stack.key, ids[n % len(ids)],
                              resume[ids[n % len(ids)]]) for n in range(size)]
        started = time.monotonic()
        opened = await held.open(specs, time.time() + OPEN_SECONDS)
        connect = time.monotonic() - started
        if opened < size:
            report.add(f"{name}: streams open", opened, "streams", baseline=size,
                       baseline_name="asked for", target="all open", met=False)
            report.note(f"{name}: not reached: {opened:,} were open {connect:.0f} s after the "
                        f"first (each may take 60 s, all {OPEN_SECONDS} s); the figures below "
                        f"are for those {opened:,}, and larger sizes on {on} were left out")
            name = f"{name} ({opened:,} open)"
        await asyncio.sleep(2)  # the replay of each stream's first page is over
        rss_open = {web.name: proc_status(web.pid, "VmRSS") for web in webs}
        counters, seen, emitted = await window(stack, probe, held, seconds)
        want, lat = expected(seen, emitted), seen.latencies
        short = sum(count < emitted.get(task, 0) for task, count in seen.counts)
        p99 = percentile(lat, 99) * 1000
        at_10k = size >= 10_000
        report.add(f"{name}: events delivered", len(lat), "events", baseline=want,
                   baseline_name="emitted x streams", target="every event" if at_10k else "",
                   met=(len(lat) >= want and short == 0) if at_10k else None)
        report.add(f"{name}: events emitted/s", sum(emitted.values()) / seconds, "events/s",
                   baseline=rate, baseline_name="--rate")
        report.add(f"{name}: delivery p50", percentile(lat, 50) * 1000, "ms")
        report.add(f"{name}: delivery p99", p99, "ms", target="< 250 ms" if at_10k else "",
                   met=(p99 < 250) if at_10k else None)
        grown = sum(rss_open[k] - rss_idle[k] for k in rss_open)
        report.add(f"{name}: web RSS per stream", grown / max(1, opened) / 1024, "KiB")
        web_cpu = sum(cores(counters, "web").values()) * seconds
        report.add(f"{name}: web CPU per delivered event",
                   web_cpu / max(1, len(lat)) * 1e6, "us",
                   baseline=(web_cpu - web_idle * seconds) / max(1, len(lat)) * 1e6,
                   baseline_name="above the no-stream window")
        report.add(f"{name}: Postgres xact/s", counters["xact_commit"], "xact/s",
                   baseline=idle["xact_commit"], baseline_name="no streams",
                   target="does not grow with streams (<= 1.2x)",
                   met=counters["xact_commit"] <= 1.2 * idle["xact_commit"])
        report.add(f"{name}: Postgres tuples read/s", counters["tup_returned"], "tup/s",
                   baseline=idle["tup_returned"], baseline_name="no streams")
        clients = cores(counters, "client")
        report.add(f"{name}: client processes' CPU", 100 * sum(clients.values()),
                   "% of a core", baseline=100 * max(clients.values()),
                   baseline_name="the busiest one")
        busy = cores(counters)
        report.add(f"{name}: the machine's cores busy", sum(busy.values()), "cores",
                   baseline=sum(cores(idle).values()), baseline_name="no streams")
        report.note(f"{name}: cores busy by process: " +
                    ", ".join(f"{k} {v:.2f}" for k, v in busy.items()))
        report.note(f"{name}: opened in {connect:.1f} s ({opened / connect:,.0f}/s); web RSS "
                    f"{sum(rss_open.values()) / 2**20:,.0f} MiB open, "
                    f"{sum(rss_idle.values()) / 2**20:,.0f} MiB with none; {short:,} stream(s) "
                    f"missed events (none within {DRAIN_SECONDS} s of the window's end), {seen.dropped:,} closed by the server")
        await held.close()
        if opened < size:
            break
        await asyncio.sleep(3)


def expected(seen: Seen, emitted: dict[str, int]) -> int:
    """The events the streams should have received: each stream, its task's events."""
    return sum(emitted.get(task, 0) for task, _ in seen.counts)


def main() -> None:
    cli("bench.fanout", "4. Fan-out", __doc__, run, tasks=1000, rate=1000.0,
        streams="1000,5000,10000", webs="1,2", clients=4, window_seconds=15.0)


if __name__ == "__main__":
    main()
