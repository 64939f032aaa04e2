"""Token relay delay: the test server streams an LLM answer -> an SSE client sees each token.

    .venv/bin/python -m bench.relay [--prompts 4] [--tokens 300] [--rate 50]

One `generate` task of `--prompts` prompts, all running at once; the test server answers each
with `--tokens` words, one token per streamed chunk, `--rate` chunks a second, and notes when
each chunk went out (`Record.sent`). One SSE client notes when each token's text arrives in a
`delta` event. The test server runs in a thread of this process, so both times are read from
the same monotonic clock. Delay = arrival - emission. The server waits 0.5 s before each answer,
so the stream is normally open before the first token; a token the client first gets in the
catch-up `text` event is not a relayed one and is counted apart.

The worker coalesces deltas to one event per ~50 ms per item (jobs/textstream.py), by design: a
token waits in the worker for the first token 50 ms after the last flush, so up to ~60 ms of the
delay at 50 tokens/s is that wait. "Newest token" is the delay of the last token in each delta,
i.e. the relay without the wait. Baseline: the same answers, as many at once, read straight from
the test server with httpx-sse (no longtask in between).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from bench._report import Report, cli
from bench._stack import Stack, percentile, submit
from longtask.testing.fake_openai import CHAT, FakeOpenAI, Record

WIDTH = 6  # characters of one token of the answer: "w0001 "
LATENCY = 0.5  # seconds before each answer: time for the SSE stream to open


class Arrivals:
    """When each token of each item's answer reached the client (monotonic), from the text
    offsets of the events; tokens that came in a catch-up `text` event are left out."""

    def __init__(self, items: int, tokens: int) -> None:
        self.tokens = tokens
        self.times: list[dict[int, float]] = [{} for _ in range(items)]
        self.newest: list[tuple[int, int, float]] = []  # (item, token, arrival) of each delta
        self.replayed = 0
        self._have = [0] * items  # characters of each answer received

    def delta(self, item: int, end: int, now: float) -> None:
        """The client has item `item`'s text up to character `end` since `now`."""
        first, last = self._advance(item, end)
        for token in range(first, last):
            self.times[item].setdefault(token, now)
        if last > first:
            self.newest.append((item, last - 1, now))

    def caught_up(self, item: int, end: int) -> None:
        first, last = self._advance(item, end)
        self.replayed += last - first

    def _advance(self, item: int, end: int) -> tuple[int, int]:
        """The tokens [first, last) that text up to `end` completes (a token is in once its
        word is; its trailing space may follow)."""
        first = self._complete(self._have[item])
        self._have[item] = max(self._have[item], end)
        return first, self._complete(self._have[item])

    def _complete(self, chars: int) -> int:
        return min(self.tokens, (chars + 1) // WIDTH)


def answer(tokens: int) -> Callable[[list[dict[str, Any]]], str]:
    """The test server's reply: `tokens` words of WIDTH - 1 characters, one chunk each."""
    text = " ".join(f"w{n:04d}" for n in range(tokens))
    return lambda messages: text


def emitted(fake: FakeOpenAI, prompts: list[str]) -> list[list[float]]:
    """When each token of the answer to each prompt went out (the last call for a prompt)."""
    by_prompt: dict[str, Record] = {}
    for record in fake.requests:
        if record.path == CHAT and isinstance(record.body, dict):
            by_prompt[record.body["messages"][-1]["content"]] = record
    return [by_prompt[p].sent for p in prompts]


def delays(arrivals: Arrivals, sent: list[list[float]]) -> tuple[list[float], list[float]]:
    """Seconds from emission to arrival: of every token, and of the newest token of each delta."""
    every = [at - sent[item][token] for item, times in enumerate(arrivals.times)
             for token, at in times.items()]
    newest = [at - sent[item][token] for item, token, at in arrivals.newest]
    return every, newest


async def through_longtask(stack: Stack, fake: FakeOpenAI, prompts: list[str],
                           tokens: int) -> tuple[Arrivals, int]:
    """Run the task and follow its SSE stream to the end; the arrivals and the chat calls."""
    arrivals = Arrivals(len(prompts), tokens)
    web = await stack.web("web", LONGTASK_LLM_URL=fake.base_url)
    await stack.workers(1, "worker", LONGTASK_LLM_URL=fake.base_url)
    fake.reset()
    async with stack.client(web) as client:
        task = await submit(client, "generate", {"prompts": prompts})
        async with aconnect_sse(client, "GET", f"/tasks/{task['id']}/events") as source:
            source.response.raise_for_status()
            async for event in source.aiter_sse():
                now = time.monotonic()
                if event.event not in ("delta", "text"):
                    continue
                data = json.loads(event.data)
                end = data.get("offset", 0) + len(data["text"])
                if event.event == "delta":
                    arrivals.delta(data["item"], end, now)
                else:
                    arrivals.caught_up(data["item"], end)
    return arrivals, fake.calls(CHAT)


async def straight(fake: FakeOpenAI, prompts: list[str], tokens: int) -> Arrivals:
    """The baseline: each answer read straight from the test server, all at once."""
    arrivals = Arrivals(len(prompts), tokens)
    fake.reset()

    async def read(client: httpx.AsyncClient, item: int) -> None:
        body = {"model": "fake-chat", "stream": True,
                "messages": [{"role": "user", "content": prompts[item]}]}
        async with aconnect_sse(client, "POST", "/chat/completions", json=body) as source:
            source.response.raise_for_status()
            have = 0
            async for event in source.aiter_sse():
                now = time.monotonic()
                if event.data == "[DONE]":
                    return
                choices = json.loads(event.data)["choices"]
                have += len(choices[0]["delta"].get("content") or "") if choices else 0
                arrivals.delta(item, have, now)

    async with httpx.AsyncClient(base_url=fake.base_url, timeout=60) as client:
        await asyncio.gather(*(read(client, item) for item in range(len(prompts))))
    return arrivals


async def run(report: Report, prompts: int, tokens: int, rate: float) -> None:
    if not 0 < tokens <= 10_000:
        raise SystemExit("--tokens: from 1 to 10,000 (a token is a word of WIDTH - 1 characters)")
    asks = [f"prompt {n}" for n in range(prompts)]
    async with FakeOpenAI(latency=LATENCY, token_delay=1 / rate, reply=answer(tokens)) as fake:
        base, base_newest = delays(await straight(fake, asks, tokens), emitted(fake, asks))
        async with Stack() as stack:
            arrivals, calls = await through_longtask(stack, fake, asks, tokens)
            sent = emitted(fake, asks)
    relayed, newest = delays(arrivals, sent)
    rates = [(tokens - 1) / (s[tokens - 1] - s[0]) for s in sent]

    for q, target in ((50, None), (99, 100)):
        value, baseline = percentile(relayed, q) * 1000, percentile(base, q) * 1000
        report.add(f"token emitted -> SSE p{q}", value, "ms", baseline=baseline,
                   baseline_name="read straight from the test server",
                   target=f"< {target} ms" if target else "",
                   met=value < target if target else None)
    report.add("token emitted -> SSE max", max(relayed) * 1000, "ms",
               baseline=max(base) * 1000, baseline_name="read straight from the test server")
    for q in (50, 99):
        report.add(f"newest token of each delta p{q}", percentile(newest, q) * 1000, "ms",
                   baseline=percentile(base_newest, q) * 1000,
                   baseline_name="read straight from the test server")
    report.note(f"{len(relayed)} tokens relayed ({arrivals.replayed} came in a catch-up `text` "
                f"event and are not counted), {prompts} answers of {tokens} tokens streamed at "
                f"once in one `generate` task, {calls} chat calls; the test server emitted "
                f"{min(rates):.1f}-{max(rates):.1f} tokens/s per answer")
    report.note(f"{len(arrivals.newest)} delta events; the worker coalesces text to one delta "
                "per ~50 ms per item by design, so p50/p99 include that wait, and the newest "
                "token of each delta shows the relay without it")


def main() -> None:
    cli("bench.relay", "7. Token relay delay", __doc__, run, prompts=4, tokens=300, rate=50.0)


if __name__ == "__main__":
    main()
