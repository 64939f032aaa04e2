"""Job kinds defined by the tests, the way a user defines their own (see README)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import longtask
from longtask.core.errors import PermanentError, TransientError


@longtask.kind("test.echo")
async def echo(ctx: longtask.JobContext, params: Any) -> dict[str, Any]:
    """Waits for a gate key in Redis if asked, reports progress, returns where it ran."""
    gate = params.get("gate") if isinstance(params, dict) else None
    while gate and not await ctx.redis.exists(gate):
        await ctx.sleep(0.02)
    for step in (25, 50, 75):
        await ctx.progress(step, f"at {step}%", stage="echoing")
    return {"echo": params, "pid": os.getpid(), "attempt": ctx.attempt}


@longtask.kind("test.forever")
async def forever(ctx: longtask.JobContext, params: Any) -> None:
    """Ticks until canceled; records that it stopped."""
    tick = 0
    try:
        while True:
            tick += 1
            await ctx.progress(min(tick, 99), f"tick {tick}", stage="ticking")
            await ctx.sleep(0.1)
    finally:
        await ctx.redis.set(f"stopped:{ctx.task_id}", tick)


@longtask.kind("test.fanout", items=lambda params: params["items"],
               item_name=lambda payload: str(payload.get("name", "")))
async def fanout(ctx: longtask.JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """One item per entry; an entry may ask to fail permanently, or transiently a few times."""
    await ctx.progress(50, "working", stage="work")
    if payload.get("fail"):
        raise PermanentError(f"{payload.get('name')} is bad", code="bad_item")
    if ctx.attempt <= payload.get("flaky", 0):
        raise TransientError("upstream hiccup", code="upstream_unavailable")
    return {"name": payload.get("name"), "pid": os.getpid(), "attempt": ctx.attempt}


@longtask.kind("test.resume")
async def resume(ctx: longtask.JobContext, params: Any) -> dict[str, Any]:
    """Four steps with a checkpoint after each; the first run fails at step 3, transiently."""
    start = int(ctx.checkpoint.get("step", 0))
    for step in range(start + 1, 5):
        await ctx.redis.rpush(f"steps:{ctx.task_id}", step)
        if step == 3 and ctx.attempt == 1:
            raise TransientError("lost the connection at step 3")
        await ctx.save_checkpoint(step=step)
    return {"resumed_from": start}


@longtask.kind("test.sleepy", timeout=0.5)
async def sleepy(ctx: longtask.JobContext, params: Any) -> None:
    """Outlives its soft timeout."""
    await ctx.progress(10, "dozing")
    await ctx.sleep(30)


@longtask.kind("test.stubborn", timeout=600)
async def stubborn(ctx: longtask.JobContext, params: Any) -> None:
    """Swallows its first cancellation (a badly behaved kind): only the hard limit stops it."""
    try:
        await asyncio.sleep(600)
    except asyncio.CancelledError:
        pass
    await asyncio.sleep(600)


@longtask.kind("test.own_at")
async def own_at(ctx: longtask.JobContext, params: Any) -> None:
    """Puts a key `at` of its own in an event (`via` emit or progress): refused, as that key
    carries every event's time."""
    if params["via"] == "emit":
        await ctx.emit("note", at="yesterday")
    else:
        await ctx.progress(50, at="yesterday")


@longtask.kind("test.reporter", items=lambda params: list(range(params["items"])))
async def reporter(ctx: longtask.JobContext, payload: int) -> None:
    """Reports progress `steps` times as fast as it can (many items at once: batched writes)."""
    steps = int(ctx.params["steps"])
    for step in range(1, steps + 1):
        await ctx.progress(100 * step / steps, f"step {step}", step=step)


@longtask.kind("test.typed", params_schema={
    "type": "object", "required": ["colour", "count"], "additionalProperties": False,
    "description": "A kind of the user's own with declared params: checked at submit.",
    "properties": {
        "colour": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/tag"}}},
    "$defs": {"tag": {"type": "string", "pattern": "^[a-z]+$"}},
    "examples": [{"colour": "red", "count": 2, "tags": ["warm"]}]})
async def typed(ctx: longtask.JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Says back what it was given, which its schema checked at submit."""
    return {"colour": params["colour"], "count": params["count"], "tags": params.get("tags", [])}


@longtask.kind("test.turnover", items=lambda params: [
    {"seconds": params.get("seconds", 1.0)} for _ in range(int(params["items"]))])
async def turnover(ctx: longtask.JobContext, payload: dict[str, Any]) -> None:
    """Takes `seconds`, and counts in Redis how many items of its tenant run at once: each item
    appends the count it saw as it started to `seen:<tenant>` (and `seen:<tenant>:<kind>`)."""
    counters = [f"running:{ctx.tenant}", f"running:{ctx.tenant}:{ctx.kind}"]
    for counter in counters:
        await ctx.redis.rpush(counter.replace("running", "seen", 1), await ctx.redis.incr(counter))
    try:
        await ctx.sleep(payload["seconds"])
    finally:
        for counter in counters:
            await ctx.redis.decr(counter)
