"""kill -9, SIGTERM and SIGSTOP of workers mid-batch: every task completes, no file is processed
to completion twice, no chunk is duplicated, nothing is left running, and a frozen worker holds
up no other."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from longtask.testing import pdfs
from longtask.testing.fake_openai import FakeOpenAI
from tests.pgwire import HoldingProxy
from tests.support import Worker, assert_no_slot_held, fake_providers, wait_for, wait_status

FILES = 20


def batch(seed: int, files: int = FILES) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"doc-{seed}-{i}.pdf", pdfs.many_pages_pdf(4 + i % 5, seed=seed * 100 + i),
                       "application/pdf")) for i in range(files)]


async def assert_exactly_once(pool: asyncpg.Pool, task_id: str, files: int = FILES) -> None:
    """Each item ended once; each document has one generation of chunks, each chunk once."""
    ends = await pool.fetch(
        "SELECT data->>'item' AS item, count(*) AS n FROM task_events WHERE task_id = $1"
        " AND type = 'item' AND data->>'status' IN ('completed', 'failed', 'canceled')"
        " GROUP BY 1", task_id)
    assert len(ends) == files and all(r["n"] == 1 for r in ends)
    chunks = await pool.fetch(
        "SELECT d.id, d.chunk_count, count(c.*) AS n, count(DISTINCT c.generation) AS g,"
        " count(DISTINCT c.idx) AS i FROM documents d JOIN chunks c ON c.document_id = d.id"
        " WHERE d.task_id = $1 GROUP BY d.id, d.chunk_count", task_id)
    assert len(chunks) == files
    assert all(r["n"] == r["chunk_count"] == r["i"] and r["g"] == 1 for r in chunks)
    seqs = [r["seq"] for r in await pool.fetch(
        "SELECT seq FROM task_events WHERE task_id = $1 ORDER BY seq", task_id)]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap in the durable history
    assert await pool.fetchval("SELECT count(*) FROM task_items WHERE status = 'running'") == 0


async def test_kill_9_a_worker_five_times_during_a_batch(make_stack: Any,
                                                        pool: asyncpg.Pool) -> None:
    await kill_9_a_worker_five_times_during_a_batch(make_stack, pool)


async def kill_9_a_worker_five_times_during_a_batch(make_stack: Any, pool: asyncpg.Pool) -> None:
    """The batch completes, each file once, with no gap in its events, on the stack that
    `make_stack` makes (tests/deploy passes one behind PgBouncer)."""
    rng = random.Random(7)
    with FakeOpenAI(latency=0.15) as fake:  # each file takes a moment: kills land mid-file
        stack = await make_stack(
            workers=2, **fake_providers(fake, LONGTASK_LEASE_SECONDS="3",
                                        LONGTASK_REAPER_SECONDS="1"))
        task_id = (await stack.client.post("/documents", files=batch(1))).json()["id"]
        resumed: list[float] = []
        points = sorted(rng.uniform(5, 80) for _ in range(5))  # random points of the batch
        for kill, point in enumerate(points):

            async def reached(percent: float = point) -> bool:
                return bool(await pool.fetchval(
                    "SELECT progress >= $2 FROM tasks WHERE id = $1", task_id, percent))

            await wait_for(reached, timeout=60, what=f"the batch to reach {point:.0f}%")
            victim = stack.workers[kill % 2]
            dead = f"%:{victim.pid}:%"
            owned = await pool.fetch(
                "SELECT id FROM task_items WHERE status = 'running' AND lease_owner LIKE $1",
                dead)
            victim.kill()
            killed_at = time.monotonic()
            victim.start()
            if owned:  # the time until another run of one of its items starts

                async def taken_again(item: Any = owned[0]["id"], dead: str = dead) -> bool:
                    return bool(await pool.fetchval(
                        "SELECT status <> 'running' OR lease_owner NOT LIKE $2 FROM task_items"
                        " WHERE id = $1", item, dead))

                await wait_for(taken_again, timeout=30, what="the dead worker's item to move on")
                resumed.append(time.monotonic() - killed_at)
        task = await wait_status(stack.client, task_id, {"completed", "failed"}, timeout=180)
        assert task["status"] == "completed" and task["items_failed"] == 0
        await assert_exactly_once(pool, task_id)
        # each killed item's job gave its slot back (the reaper retired it), and only once
        redis = Redis.from_url(stack.env["REDIS_URL"])
        try:
            await assert_no_slot_held(redis, stack.env["LONGTASK_QUEUE"], "tenant-a")
        finally:
            await redis.aclose()
        crashed = await pool.fetchval(
            "SELECT count(*) FROM task_events WHERE task_id = $1 AND type = 'item'"
            " AND data->'error'->>'code' = 'lease_expired'", task_id)
        assert crashed >= 1  # the kills did land on running items
        assert max(resumed) < 15  # lease 3 s + reaper 1 s, well before ARQ's job_timeout
        print(f"kills: 5 at {', '.join(f'{p:.0f}%' for p in points)}; items handed on: {crashed};"
              f" events: {task['last_seq']}, gaps: 0; time to resume: "
              f"{', '.join(f'{r:.1f}s' for r in resumed)}")


async def test_sigterm_a_worker_mid_batch_loses_nothing(make_stack: Any,
                                                        pool: asyncpg.Pool) -> None:
    with FakeOpenAI(latency=0.15) as fake:
        stack = await make_stack(
            workers=1, **fake_providers(fake, LONGTASK_SHUTDOWN_GRACE="1"))
        task_id = (await stack.client.post("/documents", files=batch(2))).json()["id"]

        async def some_done() -> bool:
            return bool(await pool.fetchval(
                "SELECT items_done > 2 FROM tasks WHERE id = $1", task_id))

        await wait_for(some_done, timeout=60, what="a few files to finish")
        worker = stack.workers[0]
        assert worker.terminate() == 0  # a clean exit within the grace period
        assert await pool.fetchval(
            "SELECT count(*) FROM task_items WHERE task_id = $1 AND status = 'running'",
            task_id) == 0  # handed back at once, not left to a lease
        worker.start()
        task = await wait_status(stack.client, task_id, {"completed", "failed"}, timeout=180)
        assert task["status"] == "completed" and task["items_failed"] == 0
        await assert_exactly_once(pool, task_id)


async def test_a_stalled_worker_that_wakes_up_writes_nothing(make_stack: Any,
                                                             pool: asyncpg.Pool) -> None:
    with FakeOpenAI(latency=0.3) as fake:
        stack = await make_stack(workers=2, **fake_providers(fake, concurrency=2))
        # the frozen worker's items move on after a lease and a reaper's beat; the rest is the
        # batch's own work (once, in 1 run in 4, it took 60-100 s: other workers waited on locks
        # the frozen one held)
        deadline = _lease_and_reaper(stack.env) + 10
        task_id = (await stack.client.post("/documents", files=batch(8, 6))).json()["id"]
        stalled = stack.workers[0]
        mine = f"%:{stalled.pid}:%"

        async def owns_one() -> Any:
            return await pool.fetchval(
                "SELECT id FROM task_items WHERE task_id = $1 AND status = 'running'"
                " AND lease_owner LIKE $2 LIMIT 1", task_id, mine)

        item = await wait_for(owns_one, timeout=60, what="the first worker to hold an item")
        os.kill(stalled.pid, signal.SIGSTOP)  # a long GC pause, a frozen VM...
        try:
            frozen_at = time.monotonic()
            async with _watch_waits(pool, _local_ports(stalled.pid)) as waits:
                task = await _ended_within(stack.client, task_id, deadline, waits)
            print(f"batch done {time.monotonic() - frozen_at:.1f}s after the freeze")
        finally:
            os.kill(stalled.pid, signal.SIGCONT)
        assert not waits, f"backends waited on the frozen worker's: {list(waits)}"
        assert task["status"] == "completed" and task["items_failed"] == 0
        ran_twice = await pool.fetchval(
            "SELECT count(*) FROM task_events WHERE task_id = $1 AND type = 'item'"
            " AND data->>'status' = 'running' AND data->>'item' = ("
            " SELECT idx::text FROM task_items WHERE id = $2)", task_id, item)
        assert ran_twice == 2  # another worker took the stalled one's item

        async def gave_up() -> bool:  # woken, it sees the lease is gone and stops
            return "abandoned: lease lost" in stalled.tail(400)

        await wait_for(gave_up, timeout=20, what="the woken worker to give its item up")
        await assert_exactly_once(pool, task_id, files=6)  # and it wrote nothing after waking


@pytest.mark.parametrize("statement", [
    # a chunk write: the SHARE lock of CREATE INDEX IF NOT EXISTS, at each worker's first
    # embedding, queued behind it, and every chunk write behind that (a stall of 150 s and more)
    "INSERT INTO chunks",
    # publishing a document: it held the document's row, on which the run that took the item
    # over waited until command_timeout (60 s), then failed
    "DELETE FROM chunks WHERE document_id = $1 AND generation <> $2",
])
async def test_a_worker_frozen_mid_statement_stalls_no_other_worker(
        make_stack: Any, pool: asyncpg.Pool, services: Any, redis: Any, statement: str) -> None:
    """The worst moment to freeze: between asyncpg's prepare of a statement and its bind, when
    the backend waits on the client, holding the statement's locks (and its transaction's),
    and no Postgres timeout ends the wait. A worker that starts meanwhile runs the batch."""
    with FakeOpenAI(latency=0.1) as fake:
        async with HoldingProxy(services.postgres.url, statement) as proxy:
            stack = await make_stack(workers=0, **fake_providers(fake, concurrency=2))
            deadline = _lease_and_reaper(stack.env) + 10
            logs = services.root / "logs"
            frozen = Worker("frozen-worker", {**stack.env, "DATABASE_URL": proxy.url}, logs)
            stack.workers.append(frozen.start())
            await frozen.ready(redis)
            task_id = (await stack.client.post("/documents", files=batch(10, 6))).json()["id"]
            await asyncio.wait_for(proxy.held.wait(), 60)  # it is in the middle of one
            os.kill(frozen.pid, signal.SIGSTOP)
            try:
                frozen_at = time.monotonic()
                async with _watch_waits(pool, proxy.upstream_ports) as waits:
                    late = Worker("late-worker", stack.env, logs)
                    stack.workers.append(late.start())
                    task = await _ended_within(stack.client, task_id, deadline, waits)
                print(f"batch done {time.monotonic() - frozen_at:.1f}s after the freeze")
            finally:
                os.kill(frozen.pid, signal.SIGCONT)
                proxy.release()
            assert not waits, f"backends waited on the frozen worker's: {list(waits)}"
            assert task["status"] == "completed" and task["items_failed"] == 0

            async def gave_up() -> bool:  # woken, its run finds the lease gone and stops
                return "abandoned: lease lost" in frozen.tail(400)

            await wait_for(gave_up, timeout=20, what="the woken worker to give its item up")
            await assert_exactly_once(pool, task_id, files=6)


async def _ended_within(client: Any, task_id: str, deadline: float,
                        waits: dict[str, None]) -> dict[str, Any]:
    try:
        return await wait_status(client, task_id, {"completed", "failed"}, timeout=deadline)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; backends that waited on the frozen worker's meanwhile:"
                             f" {list(waits)}") from None


def _lease_and_reaper(env: dict[str, str]) -> float:
    return float(env["LONGTASK_LEASE_SECONDS"]) + float(env["LONGTASK_REAPER_SECONDS"])


@contextlib.asynccontextmanager
async def _watch_waits(pool: asyncpg.Pool,
                       frozen: set[int]) -> AsyncIterator[dict[str, None]]:
    """While in the block, every 0.2 s: each backend that waits on a lock held by a backend
    whose client is at one of the ports `frozen` (those of a frozen process), described (the
    keys, in the order first seen)."""
    waits: dict[str, None] = {}

    async def watch() -> None:
        while True:
            rows = await pool.fetch(
                "SELECT w.pid, w.wait_event_type, left(w.query, 80) AS query, b.pid AS holder,"
                " b.client_port, b.state, b.wait_event, left(b.query, 80) AS holds"
                " FROM pg_stat_activity w"
                " CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS held(pid)"
                " JOIN pg_stat_activity b ON b.pid = held.pid")
            waits.update((f"{r['pid']} ({r['query']!r}) on {r['holder']} ({r['state']},"
                          f" {r['wait_event']}: {r['holds']!r})", None)
                         for r in rows if r["client_port"] in frozen)
            await asyncio.sleep(0.2)

    watching = asyncio.create_task(watch())
    try:
        yield waits
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching


def _local_ports(pid: int) -> set[int]:
    """The local ports of a process's TCP sockets (Linux /proc): the client ports its
    connections show in pg_stat_activity."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text() if entry.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_a_killed_workers_parser_processes_exit_with_it(make_stack: Any) -> None:
    with FakeOpenAI() as fake:
        stack = await make_stack(workers=1, **fake_providers(fake))
        task_id = (await stack.client.post("/documents", files=batch(3, files=1))).json()["id"]
        await wait_status(stack.client, task_id, {"completed"}, timeout=60)
        worker = stack.workers[0]
        parsers = [pid for pid in _children(worker.pid) if _running(pid)]
        assert parsers, "the worker parsed a PDF, so it has parser processes"
        worker.kill()

        async def all_gone() -> bool:
            return not any(_running(pid) for pid in parsers)

        await wait_for(all_gone, timeout=15, what=f"parser processes {parsers} to exit")
