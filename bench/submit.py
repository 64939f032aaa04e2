"""Submit: POST /tasks from httpx clients in separate processes, on a durable disk.

    .venv/bin/python -m bench.submit [--seconds 5] [--rounds 2] [--per-process 5]

The realistic load: each client is its own `httpx.AsyncClient` (one keep-alive connection, as a
user's script has), a tenant of its own with its own API key, in closed loop (the next request
once the last is answered). Clients run `--per-process` to a process, in as many processes as
that takes, so the load generator is not held by one GIL; their own CPU is reported. The stack
is `longtask dev`'s: one web process, one worker running the tasks (kind `noop`), the default
rate limit and queue depths, Postgres with fsync and synchronous_commit on (checked, and named
in the notes), at 20 and then 50 clients.

The baseline, in the same run: a second web process with LONGTASK_SUBMIT_BATCH=1 (each submit
commits alone, as before group commit), loaded in turn with the first, `--rounds` times each.
The minimal HTTP client (`bench/_http.py`, in this process, as this bench measured before) has
rows of its own: what the server does when the client costs nothing.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import os
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench._http import Connection
from bench._report import Report, cli
from bench._stack import Stack, cpu_by_process, percentile
from longtask.config import Settings
from longtask.core.models import NewItem
from longtask.db import create_pool
from longtask.db.group import GroupCommit
from longtask.store import api_keys
from longtask.store import tasks as task_store

CLIENTS = (20, 50)
WARM_UP_SECONDS = 2.0


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


async def post_tasks(url: str, key: str | list[str], clients: int, requests: int,
                     kind: str = "noop", ids: list[str] | None = None,
                     params: Any = None) -> tuple[float, list[float]]:
    """POST /tasks `requests` times from `clients` keep-alive connections of the minimal
    client (a list of keys: client n uses key n modulo their number)."""
    keys = [key] if isinstance(key, str) else key
    connections = [Connection(url, keys[n % len(keys)]) for n in range(clients)]
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


# --- httpx clients in processes of their own ---------------------------------------------------

def _client_process(url: str, keys: list[str], ready: Any, go: Any, window: Any,
                    results: Any) -> None:
    """One load process: its clients made (an httpx client builds its TLS context, tens of ms
    of CPU each), it says it is ready; once every process is, a closed-loop httpx client per
    key until the window ends. What was sent and answered inside the window (wall clock) is
    measured."""
    results.put(asyncio.run(_clients(url, keys, ready, go, window)))


async def _clients(url: str, keys: list[str], ready: Any, go: Any,
                   window: Any) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    clients = [httpx.AsyncClient(base_url=url, timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) for key in keys]
    ready.release()
    await asyncio.to_thread(go.wait)
    start_at, end_at = window[0], window[1]
    if time.time() >= start_at:
        raise RuntimeError("a load process started after the window opened")

    async def one(client: httpx.AsyncClient) -> None:
        async with client:
            while (now := time.time()) < end_at:
                started = time.perf_counter()
                response = await client.post("/tasks", json={"kind": "noop", "params": None})
                took = time.perf_counter() - started
                if now >= start_at and time.time() <= end_at:
                    latencies.append(took)
                    statuses[response.status_code] += 1

    cpu = [0.0, 0.0]

    async def measure_cpu() -> None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu[0] = time.process_time()
        await asyncio.sleep(max(0.0, end_at - time.time()))
        cpu[1] = time.process_time()

    await asyncio.gather(measure_cpu(), *(one(client) for client in clients))
    return {"latencies": latencies, "statuses": dict(statuses), "cpu": cpu[1] - cpu[0]}


def httpx_load(url: str, keys: list[str], per_process: int, seconds: float,
               probe: Callable[[], dict[str, float]]
               ) -> tuple[list[float], Counter[int], float, int, dict[str, float]]:
    """Run one client per key, `per_process` to a process, for `seconds` after a warm-up:
    (latencies, statuses, the clients' CPU seconds, processes, what `probe` counted over the
    window: CPU seconds by process)."""
    spawn = multiprocessing.get_context("spawn")
    results, ready, go = spawn.Queue(), spawn.Semaphore(0), spawn.Event()
    window = spawn.Array("d", 2)
    groups = [keys[i:i + per_process] for i in range(0, len(keys), per_process)]
    procs = [spawn.Process(target=_client_process,
                           args=(url, group, ready, go, window, results)) for group in groups]
    for proc in procs:
        proc.start()
    for _ in procs:  # each has imported what it needs and made its clients
        if not ready.acquire(timeout=120):
            raise RuntimeError("a load process did not start")
    window[0] = time.time() + WARM_UP_SECONDS
    window[1] = window[0] + seconds
    go.set()
    time.sleep(max(0.0, window[0] - time.time()))
    before = probe()
    time.sleep(max(0.0, window[1] - time.time()))
    after = probe()
    got = [results.get(timeout=seconds + 120) for _ in procs]
    for proc in procs:
        proc.join(30)
    latencies = [x for r in got for x in r["latencies"]]
    statuses: Counter[int] = Counter()
    for r in got:
        statuses.update({int(k): v for k, v in r["statuses"].items()})
    used = {k: after[k] - before[k] for k in after}
    return latencies, statuses, sum(r["cpu"] for r in got), len(procs), used


async def sample_waits(stack: Stack, done: asyncio.Event,
                       every: float = 0.05) -> Counter[str]:
    """What the active Postgres backends wait on, sampled until `done`."""
    assert stack.pool is not None
    waits: Counter[str] = Counter()
    while not done.is_set():
        for row in await stack.pool.fetch(
                "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS w,"
                " CASE WHEN query LIKE '%WITH room AS%' OR query = 'COMMIT;' THEN 'submit'"
                " ELSE 'other' END AS q"
                " FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"):
            waits[f"{row['q']} {row['w']}"] += 1
        await asyncio.sleep(every)
    return waits


async def _wal(stack: Stack) -> dict[str, float]:
    """Commits, WAL flushes (fsync) and the time they took so far."""
    assert stack.pool is not None
    row = await stack.pool.fetchrow(
        "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())"
        " AS commits, wal_sync AS syncs, wal_sync_time AS sync_ms FROM pg_stat_wal")
    assert row is not None
    return {k: float(v) for k, v in row.items()}


GROUPED, ALONE = "group commit", "each commits alone"


async def run(report: Report, seconds: float, per_process: int, rounds: int) -> None:
    os.environ.pop("LONGTASK_PG_FAST", None)  # a durable disk, as in production
    async with Stack() as stack:
        assert stack.pool is not None
        durable = {name: await stack.pool.fetchval(f"SHOW {name}")
                   for name in ("fsync", "synchronous_commit", "wal_sync_method")}
        assert durable["fsync"] == "on" and durable["synchronous_commit"] == "on", durable
        await stack.pool.execute("ALTER SYSTEM SET track_wal_io_timing = on")
        await stack.pool.execute("SELECT pg_reload_conf()")
        # `longtask dev`: its rate limit and depths, the tasks run by a worker
        dev = {"LONGTASK_RATE_LIMIT": "100/second", "LONGTASK_MAX_OPEN_TASKS": "10000",
               "LONGTASK_MAX_QUEUE_DEPTH": "100000", "LONGTASK_QUEUE": "bench:submit"}
        # the same-run baseline: a web process whose submits each commit alone, as before
        webs = {GROUPED: await stack.web("web", **dev),
                ALONE: await stack.web("web-alone", LONGTASK_SUBMIT_BATCH="1", **dev)}
        worker, = await stack.workers(1, "worker", **dev)
        keys = [await api_keys.create(stack.pool, f"tenant-{n}", "bench")
                for n in range(max(CLIENTS))]
        for web in webs.values():
            await post_tasks(web.url, keys, 20, 200)  # warm up the server
        await stack.analyze()
        rows: dict[tuple[int, str], dict[str, Any]] = {}
        for clients in CLIENTS:
            for n in range(rounds):  # the two alternate, so a busy spell of the host hits both
                for name, web in webs.items():
                    spy = _profile(web.pid, f"web_submit_{clients}", seconds + 4) \
                        if n == 0 and name == GROUPED else None
                    got = await _measure(stack, web, worker, keys[:clients], per_process,
                                         seconds)
                    if spy is not None:
                        spy.wait()
                    _add(rows.setdefault((clients, name), {}), got)
            for name, web in webs.items():
                _, minimal = await post_tasks(web.url, keys, clients, 50 * clients)
                rows[clients, name]["minimal"] = minimal
        store = {name: await _store_only(stack, 50, seconds, most)
                 for name, most in ((ALONE, 1), (GROUPED, Settings().submit_batch))}
    _report(report, rows, seconds * rounds, durable)
    grouped, alone = store[GROUPED], store[ALONE]
    report.add("50 writers, store only: submits/s", grouped["rate"], "/s",
               baseline=alone["rate"], baseline_name=ALONE)
    report.add("50 writers, store only: p99", grouped["p99"], "ms",
               baseline=alone["p99"], baseline_name=ALONE)
    report.note(f"store only: 50 coroutines in this process call task_store.create through "
                f"db.group on a pool of 10, no HTTP, for {seconds:.0f} s each way; submits per "
                f"commit {grouped['per_commit']:.1f} (group commit), "
                f"{alone['per_commit']:.1f} (each alone)")


async def _measure(stack: Stack, web: Any, worker: Any, keys: list[str], per_process: int,
                   seconds: float) -> dict[str, Any]:
    wal_before = await _wal(stack)
    assert stack.pool is not None
    since = await stack.pool.fetchval("SELECT clock_timestamp()")
    done = asyncio.Event()
    waits_task = asyncio.create_task(sample_waits(stack, done))
    latencies, statuses, client_cpu, procs, cpu = await asyncio.to_thread(
        httpx_load, web.url, keys, per_process, seconds,
        lambda: cpu_by_process(stack, {"web": web.pid, "worker": worker.pid}))
    done.set()
    waits = await waits_task
    wal = Counter({k: v - wal_before[k] for k, v in (await _wal(stack)).items()})
    # each task's first event is written with it and never updated: its xmin names the commit
    wal["submits"], wal["submit commits"] = await stack.pool.fetchrow(
        "SELECT count(*), count(DISTINCT xmin::text) FROM task_events"
        " WHERE seq = 1 AND created_at >= $1", since)
    return {"lat": latencies, "statuses": statuses, "client_cpu": client_cpu,
            "procs": procs, "cpu": Counter(cpu), "waits": waits, "wal": wal}


async def _store_only(stack: Stack, writers: int, seconds: float, most: int) -> dict[str, float]:
    """Where commits are the bottleneck: `writers` coroutines storing submits back to back
    through a GroupCommit on a pool of 10, as the web does, with nothing else in the way."""
    pool = await create_pool(stack.postgres.url, min_size=10, max_size=10)
    commits = GroupCommit(pool, turns=5, most=most)
    latencies: list[float] = []
    since = await pool.fetchval("SELECT clock_timestamp()")
    end = time.monotonic() + seconds

    async def writer(n: int) -> None:
        work = partial(task_store.create, tenant=f"store-{n}", kind="noop", params={},
                       items=[NewItem({})], max_open=10**9, queue="bench:store",
                       savepoint=False)
        while time.monotonic() < end:
            started = time.perf_counter()
            await commits.run(work)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(writer(n) for n in range(writers)))
    count, xacts = await pool.fetchrow(
        "SELECT count(*), count(DISTINCT xmin::text) FROM task_events"
        " WHERE seq = 1 AND created_at >= $1 AND tenant LIKE 'store-%'", since)
    await commits.close()
    await pool.close()
    return {"rate": len(latencies) / seconds, "p99": percentile(latencies, 99) * 1000,
            "per_commit": count / max(1, xacts)}


def _add(row: dict[str, Any], got: dict[str, Any]) -> None:
    """Add one round's figures to a row."""
    if not row:
        row.update(got)
        return
    row["lat"] = row["lat"] + got["lat"]
    row["client_cpu"] += got["client_cpu"]
    for name in ("statuses", "cpu", "waits", "wal"):
        row[name] = row[name] + got[name]


def _report(report: Report, rows: dict[tuple[int, str], dict[str, Any]], seconds: float,
            durable: dict[str, str]) -> None:
    goals = {20: 50.0, 50: 100.0}
    at20 = len(rows[20, GROUPED]["lat"]) / seconds
    for clients in CLIENTS:
        row, alone = rows[clients, GROUPED], rows[clients, ALONE]
        rate, alone_rate = len(row["lat"]) / seconds, len(alone["lat"]) / seconds
        base = {"baseline_name": ALONE}
        ms, alone_ms = _latencies(row["lat"]), _latencies(alone["lat"])
        target = "" if clients == 20 else f">= 200 req/s and >= at 20 ({at20:,.0f})"
        met = None if clients == 20 else rate >= max(200.0, at20)
        report.add(f"{clients} httpx clients: throughput", rate, "req/s",
                   baseline=alone_rate, target=target, met=met, **base)
        for (label, value), was in zip(ms.items(), alone_ms.values(), strict=True):
            goal = goals[clients] if label == "p99" else None
            report.add(f"{clients} httpx clients: {label}", value, "ms", baseline=was, **base,
                       target=f"< {goal:.0f} ms" if goal else "",
                       met=value < goal if goal else None)
        for label, value in _latencies(row["minimal"]).items():
            report.add(f"{clients} minimal clients: {label}", value, "ms",
                       baseline=_latencies(alone["minimal"])[label], **base)
        for who in ("client", "web", "postgres"):
            used = row["client_cpu"] if who == "client" else row["cpu"][who]
            was = alone["client_cpu"] if who == "client" else alone["cpu"][who]
            report.add(f"{clients} httpx clients: {who} CPU per request",
                       1000 * used / max(1, len(row["lat"])), "ms",
                       baseline=1000 * was / max(1, len(alone["lat"])), **base)
        for name, r in ((GROUPED, row), (ALONE, alone)):
            others = {k: v for k, v in r["statuses"].items() if k != 202}
            waits, wal = r["waits"], r["wal"]
            total = sum(waits.values()) or 1
            top = ", ".join(f"{w} {100 * n / total:.0f}%" for w, n in waits.most_common(4))
            report.note(
                f"{clients} clients, {name}: {r['procs']} load processes, {len(r['lat'])} "
                f"answers in {seconds:.0f} s{', non-202: ' + str(others) if others else ''}; "
                f"CPU in cores: clients {r['client_cpu'] / seconds:.2f}, web "
                f"{r['cpu']['web'] / seconds:.2f}, Postgres {r['cpu']['postgres'] / seconds:.2f},"
                f" worker {r['cpu']['worker'] / seconds:.2f}; WAL flushes {wal['syncs']:.0f} "
                f"({wal['sync_ms'] / max(1, wal['syncs']):.1f} ms each) for {wal['commits']:.0f}"
                f" commits (all processes); {wal['submits'] / max(1, wal['submit commits']):.2f}"
                f" submits per commit; active backends: {top}")
    report.note(f"Postgres: fsync={durable['fsync']}, synchronous_commit="
                f"{durable['synchronous_commit']}, wal_sync_method={durable['wal_sync_method']};"
                " one worker (kind noop) and two web processes, one with group commit, one with"
                " LONGTASK_SUBMIT_BATCH=1, loaded in turn; each client a tenant of its own under"
                " the default rate limit (100/s); minimal clients: the same number from this"
                " process, 50 requests each")


def _profile(pid: int, name: str, seconds: float) -> subprocess.Popen[bytes] | None:
    """With BENCH_PYSPY=<py-spy binary>: sample `pid` for `seconds` into a raw profile in the
    temp directory (`python bench/profiles/summarise.py FILE` makes the summaries kept in
    bench/profiles/)."""
    spy = os.environ.get("BENCH_PYSPY")
    if not spy:
        return None
    out = Path(tempfile.gettempdir()) / f"longtask-{name}.raw"
    return subprocess.Popen([spy, "record", "-f", "raw", "-r", "200", "-d", str(int(seconds)),
                             "-o", str(out), "-p", str(pid)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _latencies(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50) * 1000, "p99": percentile(values, 99) * 1000,
            "max": max(values, default=math.nan) * 1000}


def main() -> None:
    cli("bench.submit", "1. Submit", __doc__, run, seconds=5.0, per_process=5, rounds=2)


if __name__ == "__main__":
    main()
