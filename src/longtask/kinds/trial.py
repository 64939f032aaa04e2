"""Kinds for trying longtask out: `demo` (a countdown with progress, for trying the API without
any provider) and `noop` (measures the framework itself). A deployment has them only where it
asks (LONGTASK_TRIAL_KINDS=1, or LONGTASK_EMBEDDED=1; `longtask dev` and `demo` set it): a public
`demo` of 10,000 steps of 60 s each would let any tenant hold the fleet."""

from __future__ import annotations

from typing import Any

from longtask.core.context import JobContext
from longtask.core.kinds import kind

MAX_STEPS = 10_000
MAX_DELAY = 60

NOOP_PARAMS: dict[str, Any] = {
    "type": "object", "title": "noop", "additionalProperties": False, "properties": {},
    "description": "Does nothing: what a task costs the framework itself. Takes no params.",
    "examples": [{}]}

DEMO_PARAMS: dict[str, Any] = {
    "type": "object", "title": "demo", "additionalProperties": False,
    "description": "A countdown with progress, for trying the API without any provider; "
                   "resumes from its last step after a crash.",
    "properties": {
        "steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS, "default": 10,
                  "description": "how many steps to count"},
        "delay": {"type": "number", "minimum": 0, "maximum": MAX_DELAY, "default": 0.5,
                  "description": "seconds each step takes"}},
    "examples": [{"steps": 5, "delay": 0.1}]}


@kind("noop", params_schema=NOOP_PARAMS)
async def noop(ctx: JobContext, params: Any) -> None:
    return None


@kind("demo", params_schema=DEMO_PARAMS)
async def demo(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """params: {"steps": 10, "delay": 0.5}, checked at submit against DEMO_PARAMS."""
    # JSON Schema's integer takes 5.0 as well: count in ints
    steps, delay = int(params.get("steps", 10)), float(params.get("delay", 0.5))
    start = int(ctx.checkpoint.get("step", 0))
    for step in range(start + 1, steps + 1):
        await ctx.sleep(delay)
        await ctx.progress(100 * step / steps, f"step {step} of {steps}", stage="counting",
                           step=step)
        await ctx.save_checkpoint(step=step)
    return {"steps": steps}
