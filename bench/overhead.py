"""Per-task overhead: no-op tasks through the full path vs bare ARQ no-op jobs.

    .venv/bin/python -m bench.overhead [--tasks 5000] [--concurrency 16] [--rounds 3]

Full path: POST /tasks (kind `noop`) N times with no worker running, then start one longtask
worker: it claims each item, writes its rows and events, publishes them, and finishes the task.
Baseline: N bare ARQ jobs enqueued on the same Redis, then one bare ARQ worker (bench.bare) with
the same ARQ settings. Rates are N / (last finish - first start), so neither includes process
start-up: from ARQ's job results for the baseline, from the items' rows for the full path. The two
take turns for `--rounds` rounds (the machine's speed drifts: other work shares its host), and the
round with the median ratio is reported, with every round's figures in a note.
"""

from __future__ import annotations

import sys
import uuid

from arq import ArqRedis
from arq.jobs import deserialize_result

from bench._report import Report, cli
from bench._stack import Stack
from bench.submit import hammer, post_tasks
from longtask.broker import connection, queue
from tests.support import wait_for


async def job_rate(arq: ArqRedis, queue_name: str) -> tuple[int, float]:
    """(jobs, jobs per second) from the kept results of the jobs of `queue_name` (read at once:
    ARQ keeps them for 60 s)."""
    keys = [k async for k in arq.scan_iter(match="arq:result:*", count=1000)]
    raws = await arq.mget(keys) if keys else []
    results = [deserialize_result(r, deserializer=connection.loads) for r in raws if r]
    results = [r for r in results if r.queue_name == queue_name]
    span = max(r.finish_time for r in results) - min(r.start_time for r in results)
    return len(results), len(results) / span.total_seconds()


async def redis_commands(arq: ArqRedis) -> int:
    """Commands Redis has processed so far (all clients; the bench's own polls included)."""
    return int((await arq.info("stats"))["total_commands_processed"])


async def drained(arq: ArqRedis, queue_name: str, jobs: int, timeout: float) -> None:
    async def empty() -> bool:
        if await arq.zcard(queue_name):
            return False
        return not [k async for k in arq.scan_iter(match="arq:in-progress:*")]

    await wait_for(empty, timeout, f"{jobs} jobs of {queue_name} to run", interval=0.1)


async def bare_round(stack: Stack, arq: ArqRedis, queue_name: str, tasks: int,
                     env: dict[str, str]) -> tuple[int, float, float]:
    """`tasks` bare ARQ no-op jobs through one bare worker: (jobs, jobs/s, Redis cmds/job)."""
    await hammer(lambda n: arq.enqueue_job(queue.RUN_ITEM, "x", _job_id=str(uuid.uuid4()),
                                         _queue_name=queue_name), 50, tasks)
    before = await redis_commands(arq)
    bare = stack.proc(f"bare-worker-{queue_name}", [sys.executable, "-m", "arq",
                                                    "bench.bare.WorkerSettings"],
                      stack.env(BENCH_QUEUE=queue_name, **env))
    await drained(arq, queue_name, tasks, timeout=600)
    jobs, rate = await job_rate(arq, queue_name)
    stack.stop(bare)
    return jobs, rate, (await redis_commands(arq) - before) / tasks


async def full_round(stack: Stack, arq: ArqRedis, queue_name: str, tasks: int,
                     env: dict[str, str]) -> tuple[int, float, float, float]:
    """`tasks` no-op tasks submitted with no worker running, then run by one longtask worker:
    (items, items/s, Redis cmds/task, Postgres transactions/task)."""
    assert stack.pool is not None
    web = await stack.web(f"web-{queue_name}", LONGTASK_QUEUE=queue_name)
    ids: list[str] = []
    await post_tasks(web.url, stack.key, 50, tasks, ids=ids)
    stack.stop(web)
    await stack.analyze()  # the worker's plans are made for the tables as they are
    redis_before, pg_before = await redis_commands(arq), await stack.pg_counters()
    worker = (await stack.workers(1, f"worker-{queue_name}", LONGTASK_QUEUE=queue_name,
                                  **env))[0]
    await stack.wait_tasks_done(ids, timeout=1200)
    stack.stop(worker)
    redis_cmds = (await redis_commands(arq) - redis_before) / tasks
    pg_xacts = ((await stack.pg_counters())["xact_commit"] - pg_before["xact_commit"]) / tasks
    # from the items' own times (first claim to last finish): a run longer than ARQ keeps
    # its results (60 s) would lose the first ones
    jobs, span = await stack.pool.fetchrow(
        "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))::float"
        " FROM task_items WHERE task_id = any($1::uuid[]) AND status = 'completed'", ids)
    return jobs, jobs / span, redis_cmds, pg_xacts


async def run(report: Report, tasks: int, concurrency: int, rounds: int) -> None:
    env = {"LONGTASK_WORKER_CONCURRENCY": str(concurrency)}
    bares: list[tuple[int, float, float]] = []
    fulls: list[tuple[int, float, float, float]] = []
    async with Stack() as stack:
        arq = await connection.connect(stack.redis_url)
        # the two sides take turns, so a slow spell of the machine (others' work on the host)
        # falls on both; each round has its own queue and tasks
        for n in range(rounds):
            bares.append(await bare_round(stack, arq, f"bench:bare:{n}", tasks, env))
            fulls.append(await full_round(stack, arq, f"bench:overhead:{n}", tasks, env))
        await arq.aclose()

    ratios = [full[1] / bare[1] for bare, full in zip(bares, fulls, strict=True)]
    middle = sorted(range(rounds), key=lambda n: ratios[n])[rounds // 2]  # the median round
    (base_jobs, base_rate, base_redis), (jobs, rate, full_redis, pg_xacts) = \
        bares[middle], fulls[middle]
    report.add("no-op tasks, full path", rate, "tasks/s", baseline=base_rate,
               baseline_name="bare ARQ no-op jobs", target=">= 50% of bare rate",
               met=rate >= 0.5 * base_rate)
    report.add("per-task cost, full path", 1000 * concurrency / rate, "ms of a slot",
               baseline=1000 * concurrency / base_rate, baseline_name="bare ARQ")
    report.add("Redis commands per task", full_redis, "cmds", baseline=base_redis,
               baseline_name="bare ARQ")
    report.add("Postgres transactions per task", pg_xacts, "xacts")
    report.note(f"{rounds} rounds, the two sides taking turns; the table shows the round with "
                "the median ratio. Every round (full / bare tasks/s = ratio): " + "; ".join(
                    f"{f[1]:,.0f} / {b[1]:,.0f} = {r:.2f}"
                    for b, f, r in zip(bares, fulls, ratios, strict=True)))
    report.note("commands and transactions per task include the bench's own polling (a few "
                "per second) and the worker's start-up")
    report.note(f"{jobs} longtask items and {base_jobs} bare jobs a round; 1 worker process, "
                f"max_jobs={concurrency}, poll_delay=0.05 on both sides")


def main() -> None:
    cli("bench.overhead", "2. Per-task overhead", __doc__, run, tasks=5000, concurrency=16,
        rounds=3)


if __name__ == "__main__":
    main()
