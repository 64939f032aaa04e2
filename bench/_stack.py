"""The services a benchmark measures: PostgreSQL and Redis on free ports, web and worker processes.

    async with Stack() as stack:
        web = await stack.web("web")
        workers = await stack.workers(2, "worker", LONGTASK_WORKER_CONCURRENCY="16")
        async with stack.client(web) as client:
            ...

Real processes over real sockets, as in the test suite (`tests.support`): nothing is mocked. The
services run with production settings (fsync on) unless LONGTASK_PG_FAST=1 is in the environment.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from longtask.db import create_pool  # noqa: E402
from longtask.db.migrate import migrate  # noqa: E402
from longtask.dev.embedded import EmbeddedPostgres, EmbeddedRedis, free_port  # noqa: E402
from longtask.store import api_keys  # noqa: E402
from tests.support import Proc, Web, Worker, service_env, wait_for  # noqa: E402

TERMINAL = ("completed", "failed", "canceled")

# what every bench process gets: no backpressure in the way, quiet logs, production timings
BENCH_ENV = {
    "LONGTASK_KINDS": "bench.kinds",
    "LONGTASK_TRIAL_KINDS": "1",  # noop, demo
    "LONGTASK_RATE_LIMIT": "off",
    "LONGTASK_MAX_OPEN_TASKS": "20000",  # above any bench's open tasks; each submit counts them
    "LONGTASK_MAX_QUEUE_DEPTH": "10000000",
    "LONGTASK_HEARTBEAT_SECONDS": "5",
    "LONGTASK_LEASE_SECONDS": "20",
    "LONGTASK_REAPER_SECONDS": "5",
    "LONGTASK_SSE_PING_SECONDS": "15",
    "LONGTASK_WORKER_CONCURRENCY": "16",
    "LOG_LEVEL": "WARNING",
    # an embeddings endpoint (never called outside bench.ingest), so a worker does not load the
    # local model at start: that import holds the GIL for tens of seconds, under the timings
    "LONGTASK_EMBED_URL": "http://127.0.0.1:9/v1",
    # this checkout's code, not what the venv's editable install points at (another checkout's
    # src, when a worktree borrows a venv: its workers would run other code on our migrations)
    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
}


def raise_fd_limit() -> int:
    """Raise this process's (and its children's) open-file limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Stack:
    """PostgreSQL + Redis for one benchmark script, and the processes started on them."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="longtask-bench-"))
        os.chmod(self.root, 0o755)  # the pgserver system user must reach the data directory
        (self.root / "logs").mkdir()
        self.postgres = EmbeddedPostgres(self.root / "pg", free_port())
        self.redis_server = EmbeddedRedis(self.root / "redis", free_port())
        self.procs: list[Proc] = []
        self.key = ""
        self.pool: asyncpg.Pool | None = None
        self.redis: Redis | None = None

    async def __aenter__(self) -> Stack:
        raise_fd_limit()
        self.postgres.start()
        self.redis_server.start()
        await migrate(self.postgres.url)
        self.pool = await create_pool(self.postgres.url, min_size=1, max_size=4)
        self.key = await api_keys.create(self.pool, "bench", "bench")
        self.redis = Redis.from_url(self.redis_server.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.terminate(timeout=10)
        if self.redis is not None:
            await self.redis.aclose()
        if self.pool is not None:
            await self.pool.close()
        self.redis_server.kill()
        self.postgres.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def redis_url(self) -> str:
        return self.redis_server.url

    def env(self, **extra: str) -> dict[str, str]:
        return service_env(self.postgres.url, self.redis_url, **{**BENCH_ENV, **extra})

    async def web(self, name: str, **env: str) -> Web:
        proc = Web(name, self.env(**env), self.root / "logs")
        self.procs.append(proc.start())
        return await proc.ready(timeout=60)

    async def workers(self, count: int, name: str, **env: str) -> list[Worker]:
        procs = [Worker(f"{name}-{i}", self.env(**env), self.root / "logs").start()
                 for i in range(count)]
        self.procs += procs
        for proc in procs:
            await proc.ready(self.redis, timeout=60)
        return procs

    def proc(self, name: str, args: list[str], env: Mapping[str, str]) -> Proc:
        """Any other process (a bare ARQ worker), stopped with the stack."""
        proc = Proc(name, args, env, self.root / "logs").start()
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.terminate(timeout=20)
        self.procs.remove(proc)

    def client(self, web: Web, connections: int = 100, timeout: float = 60) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(base_url=web.url, timeout=timeout, limits=limits,
                                 headers={"Authorization": f"Bearer {self.key}"})

    async def pg_counters(self) -> dict[str, int]:
        """pg_stat_database counters of the bench database (cumulative)."""
        assert self.pool is not None
        row = await self.pool.fetchrow(
            "SELECT xact_commit, tup_returned, tup_fetched FROM pg_stat_database"
            " WHERE datname = current_database()")
        return dict(row)

    async def analyze(self) -> None:
        """Table statistics for what the bench has made, as autovacuum gives them a running
        deployment within a minute or so. Without them, each connection's cached plans are
        the ones made for near-empty tables (a seq scan of `tasks` per progress event, a scan of
        every running item per heartbeat) until autovacuum gets round to the tables; ANALYZE
        also makes every session plan its prepared statements again."""
        assert self.pool is not None
        await self.pool.execute("ANALYZE tasks, task_items, task_events")

    async def wait_tasks_done(self, ids: list[str], timeout: float) -> float:
        """Wait until every task in `ids` is terminal; the monotonic time it was seen so."""
        assert self.pool is not None
        pool = self.pool

        async def done() -> bool:
            left = await pool.fetchval(
                "SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[])"
                " AND status NOT IN ('completed', 'failed', 'canceled')", ids)
            return left == 0

        await wait_for(done, timeout, f"{len(ids)} task(s) to end", interval=0.02)
        return time.monotonic()


async def submit(client: httpx.AsyncClient, kind: str, params: Any = None) -> dict[str, Any]:
    response = await client.post("/tasks", json={"kind": kind, "params": params})
    if response.status_code != 202:
        raise RuntimeError(f"POST /tasks answered {response.status_code}: {response.text}")
    return dict(response.json())


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def proc_status(pid: int, field: str) -> int:
    """A /proc/PID/status figure in bytes (VmRSS, VmHWM); 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_process(stack: Stack, named: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process, by Postgres (all its processes), by Redis,
    and by this one (the bench's own client side)."""
    postgres = stack.postgres.running_pid()
    redis = stack.redis_server.process
    return {
        **{name: cpu_seconds(pid) for name, pid in named.items()},
        "postgres": sum(map(cpu_seconds, [postgres, *descendants(postgres)])) if postgres else 0,
        "redis": cpu_seconds(redis.pid) if redis is not None else 0.0,
        "bench client": cpu_seconds(os.getpid()),
    }


def descendants(pid: int) -> list[int]:
    """Child processes of `pid`, recursively (parser and embedding processes of a worker)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


async def sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
