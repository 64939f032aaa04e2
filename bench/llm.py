"""LLM-bound batch: one task of N items, each one chat completion against the project's
OpenAI-compatible test server with 1 s of latency, `--concurrency` calls in flight in all.

    .venv/bin/python -m bench.llm [--items 100] [--concurrency 16] [--latency 1.0]

Wall time from POST /tasks to the task's end, against the ideal ceil(items / concurrency) x latency.
Run on 1 worker (max_jobs = concurrency) and on 2 workers (max_jobs = concurrency / 2 each), so
both have the same ideal.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench._report import Report, cli
from bench._stack import Stack, percentile, submit
from longtask.testing.fake_openai import CHAT, FakeOpenAI


async def run(report: Report, items: int, concurrency: int, latency: float) -> None:
    await batch(report, "bench.llm", {"items": list(range(items))}, items, concurrency, latency)


async def batch(report: Report, kind: str, params: dict[str, Any], items: int, concurrency: int,
                latency: float) -> None:
    """Time one task of `kind` with `items` items, one LLM call each, on 1 and on 2 workers,
    `concurrency` jobs in all, against ceil(items / concurrency) x latency."""
    ideal = math.ceil(items / concurrency) * latency
    async with FakeOpenAI(latency=latency) as fake:
        for workers in (1, 2):
            async with Stack() as stack:
                env = {"LONGTASK_LLM_URL": fake.base_url,
                       "LONGTASK_WORKER_CONCURRENCY": str(concurrency // workers)}
                web = await stack.web("web", **env)
                await stack.workers(workers, "worker", **env)
                fake.reset()
                async with stack.client(web) as client:
                    started = time.monotonic()
                    task = await submit(client, kind, params)
                    ended = await stack.wait_tasks_done([task["id"]], timeout=ideal * 10 + 60)
                    final = (await client.get(f"/tasks/{task['id']}")).json()
                wall = ended - started
                calls = fake.calls(CHAT)
                where = timeline(fake, started, ended, concurrency)
            report.add(f"{items} LLM items, {workers} worker(s)", wall, "s", baseline=ideal,
                       baseline_name=f"ideal ceil({items}/{concurrency}) x {latency:g} s",
                       target="within 15% of ideal",
                       met=wall <= 1.15 * ideal and final["status"] == "completed")
            report.note(f"{workers} worker(s) x max_jobs {concurrency // workers}: "
                        f"task {final['status']}, {calls} chat calls, at most "
                        f"{fake.max_concurrency} at once at the test server; {where}")


def timeline(fake: FakeOpenAI, started: float, ended: float, concurrency: int) -> str:
    """Where the wall time beyond the calls' latency went: before the first call, between a
    call's end and the next call's start in the slot it freed (the n-th start past the first
    `concurrency` takes the n-th slot to free), and after the last call."""
    calls = [r for r in fake.requests if r.path == CHAT]
    starts, ends = sorted(r.started for r in calls), sorted(r.ended for r in calls)
    turnarounds = [s - e for s, e in zip(starts[concurrency:], ends)] or [0.0]
    return (f"POST -> first call {starts[0] - started:.2f} s, a slot's turnaround (a call's "
            f"end -> the next call's start) p50 {percentile(turnarounds, 50) * 1000:.0f} ms "
            f"max {max(turnarounds) * 1000:.0f} ms, last call's end -> task seen ended "
            f"{ended - ends[-1]:.2f} s")


def main() -> None:
    cli("bench.llm", "5. LLM-bound batch", __doc__, run, items=100, concurrency=16,
        latency=1.0)


if __name__ == "__main__":
    main()
