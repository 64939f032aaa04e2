"""Job kinds for the benchmarks (LONGTASK_KINDS=bench.kinds), defined the way a user would.

`bench.emit` emits progress events stamped with the wall-clock time of the emit, so a client can
measure worker-to-SSE latency; `bench.llm` is one LLM call per item, the shape of a batch job.
"""

from __future__ import annotations

import time
from typing import Any

import longtask
from longtask.kinds import llm as llm_of_worker


@longtask.kind("bench.emit")
async def emit(ctx: longtask.JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """params: {"events": N, "interval": seconds, "gate": redis key to wait for first}."""
    gate = params.get("gate")
    while gate and not await ctx.redis.exists(gate):
        await ctx.sleep(0.01)
    events, interval = int(params["events"]), float(params.get("interval", 0))
    started = time.monotonic()
    for n in range(1, events + 1):
        await ctx.progress(100 * n / events, None, n=n, t=time.time())
        if interval:
            await ctx.sleep(max(0.0, started + n * interval - time.monotonic()))
    return {"events": events}


@longtask.kind("bench.llm", items=lambda params: params["items"])
async def llm(ctx: longtask.JobContext, item: Any) -> dict[str, Any]:
    """One chat completion per item, through the project's own LLM client."""
    summariser = llm_of_worker.summariser(ctx)
    summary = await summariser.summarise(f"item {item}: a short text for the model to summarise.")
    return {"method": summary.method}


@longtask.kind("bench.sleep", items=lambda params: [float(params.get("seconds", 1.0))
                                                    for _ in range(int(params["items"]))])
async def sleep(ctx: longtask.JobContext, seconds: float) -> None:
    """`items` items of `seconds` each: a stand-in for items whose time is spent waiting
    (an LLM call, a download), the turnover the fairness bench counts in."""
    await ctx.sleep(seconds)
