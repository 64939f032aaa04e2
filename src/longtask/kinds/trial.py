"""Kinds for trying longtask out: `demo` (a countdown with progress, for trying the API without
any provider) and `noop` (measures the framework itself). A deployment has them only where it
asks (LONGTASK_TRIAL_KINDS=1, or LONGTASK_EMBEDDED=1; `longtask dev` and `demo` set it): a public
`demo` of 10,000 steps of 60 s each would let any tenant hold the fleet."""

from __future__ import annotations

from typing import Any

from longtask.core.context import JobContext
from longtask.core.errors import PermanentError
from longtask.core.kinds import kind


@kind("noop")
async def noop(ctx: JobContext, params: Any) -> None:
    return None


@kind("demo")
async def demo(ctx: JobContext, params: Any) -> dict[str, Any]:
    """params: {"steps": 10, "delay": 0.5}; resumes from its checkpoint after a crash."""
    params = params if isinstance(params, dict) else {}
    steps, delay = params.get("steps", 10), params.get("delay", 0.5)
    if not isinstance(steps, int) or not 1 <= steps <= 10_000:
        raise PermanentError("steps must be a whole number from 1 to 10000", code="invalid_params")
    if not isinstance(delay, (int, float)) or not 0 <= delay <= 60:
        raise PermanentError("delay must be 0 to 60 seconds", code="invalid_params")
    start = int(ctx.checkpoint.get("step", 0))
    for step in range(start + 1, steps + 1):
        await ctx.sleep(delay)
        await ctx.progress(100 * step / steps, f"step {step} of {steps}", stage="counting",
                           step=step)
        await ctx.save_checkpoint(step=step)
    return {"steps": steps}
