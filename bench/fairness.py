"""Fair dispatch across tenants: what it costs one tenant alone, what it saves a second one.

    .venv/bin/python -m bench.fairness [--tasks 5000] [--concurrency 16] [--rounds 3]
                                       [--items 100] [--seconds 3]

One tenant alone: `--tasks` no-op tasks submitted with no worker running, then one worker of
`--concurrency` slots runs them (bench.overhead's full path), once with fair dispatch on the
default settings and once with LONGTASK_FAIR_DISPATCH=0 (every job straight onto the ARQ queue,
as before). The two take turns for `--rounds` rounds, each on a queue of its own (the machine's
speed drifts), and the round with the median ratio is reported. Rates are items / (last finish -
first start), from the items' rows: start-up is left out.

Two tenants: one worker of `--concurrency` slots; tenant A submits `--items` items of `--seconds`
each (several times what the fleet runs at once) and, once A's items fill every slot, tenant B
submits one item. B's wait is its item's start minus its submit, from Postgres, also in item
turnovers (`--seconds`). Three ways: fair dispatch with A under the default cap
(LONGTASK_TENANT_CONCURRENCY), fair dispatch with no cap (the turns alone), and fair dispatch
off. A's most items running at once is sampled from Postgres meanwhile.
"""

from __future__ import annotations

import httpx

from bench._report import Report, cli
from bench._stack import Stack
from bench.overhead import redis_commands
from bench.submit import post_tasks
from longtask.config import Settings
from longtask.store import api_keys
from tests.support import wait_for

OFF = {"LONGTASK_FAIR_DISPATCH": "0"}


async def alone_round(stack: Stack, queue: str, tasks: int,
                      env: dict[str, str]) -> tuple[float, float, float]:
    """`tasks` no-op tasks of one tenant, submitted, then run by one worker: (submits per
    second, items per second, Redis commands per item run)."""
    assert stack.pool is not None
    web = await stack.web(f"web-{queue}", LONGTASK_QUEUE=queue, **env)
    ids: list[str] = []
    submits, _ = await post_tasks(web.url, stack.key, 50, tasks, ids=ids)
    stack.stop(web)
    await stack.analyze()
    assert stack.redis is not None
    commands = await redis_commands(stack.redis)  # type: ignore[arg-type]
    worker = (await stack.workers(1, f"worker-{queue}", LONGTASK_QUEUE=queue, **env))[0]
    await stack.wait_tasks_done(ids, timeout=1200)
    stack.stop(worker)
    commands = await redis_commands(stack.redis) - commands  # type: ignore[arg-type]
    jobs, span = await stack.pool.fetchrow(
        "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))::float"
        " FROM task_items WHERE task_id = any($1::uuid[]) AND status = 'completed'", ids)
    assert jobs == tasks, f"{jobs} of {tasks} items completed"
    return submits, jobs / span, commands / tasks


async def two_tenants(stack: Stack, queue: str, items: int, seconds: float,
                      concurrency: int, env: dict[str, str]) -> tuple[float, int, int]:
    """B's wait behind A's backlog: (seconds, A's items started meanwhile, A's most running)."""
    assert stack.pool is not None
    pool = stack.pool
    web = await stack.web(f"web-{queue}", LONGTASK_QUEUE=queue, **env)
    worker = (await stack.workers(1, f"worker-{queue}", LONGTASK_QUEUE=queue, **env))[0]
    key_b = await api_keys.create(pool, f"bench-b-{queue}", "bench")
    async with stack.client(web) as a:
        big = await _submit(a, items, seconds)
    cap = int(env.get("LONGTASK_TENANT_CONCURRENCY", Settings().tenant_concurrency))
    full = concurrency if env.get("LONGTASK_FAIR_DISPATCH") == "0" or not cap \
        else min(cap, concurrency)

    async def running() -> int:
        return int(await pool.fetchval(
            "SELECT count(*) FROM task_items WHERE task_id = $1 AND status = 'running'", big))

    async def filled() -> bool:
        return await running() >= full

    await wait_for(filled, 60, "A's items to fill the slots it may take")
    most = 0

    async def small_done() -> bool:
        nonlocal most
        most = max(most, await running())
        return await pool.fetchval("SELECT status FROM tasks WHERE id = $1", small) == "completed"

    async with httpx.AsyncClient(base_url=web.url, timeout=60,
                                 headers={"Authorization": f"Bearer {key_b}"}) as b:
        small = await _submit(b, 1, seconds)
        await wait_for(small_done, 30 + items * seconds, "B's item to complete", interval=0.05)
    submitted, started = await pool.fetchrow(
        "SELECT t.created_at, i.started_at FROM tasks t JOIN task_items i ON i.task_id = t.id"
        " WHERE t.id = $1", small)
    ahead = await pool.fetchval(
        "SELECT count(*) FROM task_items WHERE task_id = $1 AND started_at > $2"
        " AND started_at < $3", big, submitted, started)
    async with stack.client(web) as client:
        await client.post(f"/tasks/{big}/cancel")
    stack.stop(worker)
    stack.stop(web)
    return (started - submitted).total_seconds(), int(ahead), most


async def _submit(client: httpx.AsyncClient, items: int, seconds: float) -> str:
    answer = await client.post("/tasks", json={"kind": "bench.sleep", "params": {
        "items": items, "seconds": seconds}})
    answer.raise_for_status()
    return str(answer.json()["id"])


async def run(report: Report, tasks: int, concurrency: int, rounds: int, items: int,
              seconds: float) -> None:
    slots = {"LONGTASK_WORKER_CONCURRENCY": str(concurrency)}
    fair: list[tuple[float, float, float]] = []
    before: list[tuple[float, float, float]] = []
    waits: dict[str, tuple[float, int, int]] = {}
    async with Stack() as stack:
        for n in range(rounds):
            before.append(await alone_round(stack, f"bench:before:{n}", tasks, {**slots, **OFF}))
            fair.append(await alone_round(stack, f"bench:fair:{n}", tasks, slots))
        uncapped = {**slots, "LONGTASK_TENANT_CONCURRENCY": "0"}
        for name, env in (("capped", slots), ("turns", uncapped), ("before", {**slots, **OFF})):
            waits[name] = await two_tenants(stack, f"bench:two:{name}", items, seconds,
                                            concurrency, env)

    ratios = [f[1] / b[1] for b, f in zip(before, fair, strict=True)]
    middle = sorted(range(rounds), key=lambda n: ratios[n])[rounds // 2]
    (submits_before, rate_before, cmds_before), (submits_fair, rate_fair, cmds_fair) = \
        before[middle], fair[middle]
    report.add("one tenant alone: no-op items", rate_fair, "items/s", baseline=rate_before,
               baseline_name="fair dispatch off", target=">= 90% of before",
               met=rate_fair >= 0.9 * rate_before)
    report.add("one tenant alone: POST /tasks", submits_fair, "tasks/s",
               baseline=submits_before, baseline_name="fair dispatch off")
    report.add("one tenant alone: Redis commands per item run", cmds_fair, "cmds",
               baseline=cmds_before, baseline_name="fair dispatch off")
    cap = Settings().tenant_concurrency
    for name, label in (("capped", f"A capped at {cap} (default)"),
                        ("turns", "A uncapped: turns alone")):
        wait, ahead, most = waits[name]
        report.add(f"B's wait, {label}", wait / seconds, "turnovers",
                   baseline=waits["before"][0] / seconds, baseline_name="fair dispatch off",
                   target="<= 1 turnover + poll", met=wait <= seconds + 1.0)
        report.add(f"A's items started during B's wait, {label}", ahead, "items",
                   baseline=waits["before"][1], baseline_name="fair dispatch off")
        report.add(f"A's most items running, {label}", most, "items")
    report.note(f"{rounds} rounds of {tasks} no-op tasks, the two sides taking turns; the table "
                "shows the round with the median ratio. Every round (fair / before items/s = "
                "ratio): " + "; ".join(f"{f[1]:,.0f} / {b[1]:,.0f} = {r:.2f}"
                                       for b, f, r in zip(before, fair, ratios, strict=True)))
    report.note(f"two tenants: 1 worker, max_jobs={concurrency}; A: {items} items of {seconds:g} s"
                f" (one turnover = {seconds:g} s); B: 1 item, submitted once A's items fill the "
                "slots A may take. B's waits in seconds: " + ", ".join(
                    f"{name} {w[0]:.2f}" for name, w in waits.items()))


def main() -> None:
    cli("bench.fairness", "9. Fair dispatch across tenants", __doc__, run, tasks=5000,
        concurrency=16, rounds=3, items=100, seconds=3.0)


if __name__ == "__main__":
    main()
