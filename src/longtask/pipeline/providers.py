"""The LLM and embedding providers the settings ask for: an endpoint, or the offline default."""

from __future__ import annotations

import httpx

from longtask.config import Settings
from longtask.pipeline.chat import ChatClient, Throttle
from longtask.pipeline.embed import Embedder, HttpEmbedder, LocalEmbedder
from longtask.pipeline.llm import ChatSummariser, ExtractiveSummariser, Summariser
from longtask.pipeline.tokenize import Tokenizer, local, remote


def chat(settings: Settings, http: httpx.AsyncClient,
         throttle: Throttle | None = None) -> ChatClient | None:
    """The configured chat endpoint, or None: offline."""
    if not settings.llm_url:
        return None
    return ChatClient(http, settings.llm_url, settings.llm_api_key, settings.llm_model,
                      settings.llm_timeout, throttle)


def summariser_of(client: ChatClient | None) -> Summariser:
    """Summaries from `client`, or offline extractive ones without it."""
    return ChatSummariser(client) if client is not None else ExtractiveSummariser()


def embedder(settings: Settings, http: httpx.AsyncClient) -> Embedder:
    if settings.embed_url:
        return HttpEmbedder(http, settings.embed_url, settings.embed_api_key, settings.embed_model)
    return LocalEmbedder(settings.embed_batch)


def tokenizer(settings: Settings) -> Tokenizer:
    """The token count of the embedder the settings ask for (loads files: call it off the loop)."""
    if settings.embed_url:
        return remote(settings.embed_model, settings.embed_window)
    return local()
