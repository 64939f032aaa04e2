"""The LLM a worker's kinds share: the configured chat endpoint behind the shared rate limit,
made once per worker process; None when no endpoint is configured (offline)."""

from __future__ import annotations

from longtask.broker import provider_limits
from longtask.core.context import JobContext
from longtask.pipeline import providers
from longtask.pipeline.chat import ChatClient
from longtask.pipeline.llm import Summariser


def chat(ctx: JobContext) -> ChatClient | None:
    return ctx.resource("chat", lambda: providers.chat(
        ctx.settings, ctx.http, provider_limits.throttle(ctx.settings, ctx.redis)))


def summariser(ctx: JobContext) -> Summariser:
    return ctx.resource("summariser", lambda: providers.summariser_of(chat(ctx)))
