"""The LLM and embedding providers the settings ask for: an endpoint, or the offline default."""

from __future__ import annotations

import httpx

from longtask.pipeline.embed import Embedder, HttpEmbedder, LocalEmbedder
from longtask.pipeline.llm import ChatSummariser, ExtractiveSummariser, Summariser
from longtask.settings import Settings


def summariser(settings: Settings, http: httpx.AsyncClient) -> Summariser:
    if settings.llm_url:
        return ChatSummariser(http, settings.llm_url, settings.llm_api_key, settings.llm_model,
                              settings.llm_timeout)
    return ExtractiveSummariser()


def embedder(settings: Settings, http: httpx.AsyncClient) -> Embedder:
    if settings.embed_url:
        return HttpEmbedder(http, settings.embed_url, settings.embed_api_key, settings.embed_model)
    return LocalEmbedder(settings.embed_batch)
