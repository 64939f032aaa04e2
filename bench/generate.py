"""The `generate` batch: one task of N prompts, each one streamed chat completion against the
project's OpenAI-compatible test server with 1 s of latency, `--concurrency` calls in flight in
all.

    .venv/bin/python -m bench.generate [--prompts 100] [--concurrency 16] [--latency 1.0]

The same measure as bench.llm, with the built-in kind a user submits: each answer also goes out
live as `delta` events (its text saved on the item, then published) and is checkpointed. Wall
time from POST /tasks to the task's end, against the ideal ceil(prompts / concurrency) x latency,
on 1 worker (max_jobs = concurrency) and on 2 workers (max_jobs = concurrency / 2 each). Nothing
else caps the calls in flight: no shared provider limit is set (LONGTASK_LLM_RATE), and the
worker's httpx client allows 100 connections.
"""

from __future__ import annotations

from bench._report import Report, cli
from bench.llm import batch


async def run(report: Report, prompts: int, concurrency: int, latency: float) -> None:
    params = {"prompts": [f"prompt {n}: a short text for the model to answer."
                          for n in range(prompts)]}
    await batch(report, "generate", params, prompts, concurrency, latency)


def main() -> None:
    cli("bench.generate", "8. Generate batch", __doc__, run, prompts=100, concurrency=16,
        latency=1.0)


if __name__ == "__main__":
    main()
