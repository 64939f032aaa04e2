"""An OpenAI-compatible server of our own, on loopback, so tests and benchmarks exercise the real
httpx client code without a paid API.

    with FakeOpenAI(latency=0.5) as server:          # uvicorn on a free port, in a thread
        settings.llm_url = server.base_url          # http://127.0.0.1:PORT/v1
        server.fail_next("429", retry_after=1)       # then "500", "400", "hang", "broken_stream"
        ...
        server.calls("/v1/chat/completions")

    python -m longtask.testing.fake_openai --port 8001 --latency 1   # in the foreground

Chat replies are "Summary: " and the first 30 words of the last user message (or `reply(...)`),
streamed as chat.completion.chunk events when asked. Embeddings are a hashed bag of words,
L2-normalised, so texts that share words get similar vectors.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from longtask.embedded import free_port

FAULTS = ("429", "500", "400", "hang", "broken_stream")


@dataclass
class Record:
    path: str
    body: Any
    started: float
    status: int = 0
    ended: float = 0.0


@dataclass
class FakeOpenAI:
    latency: float = 0.0
    token_delay: float = 0.0
    dimensions: int = 384
    requests_per_minute: int | None = None
    reply: Callable[[list[dict[str, Any]]], str] | None = None
    port: int = field(default_factory=free_port)
    requests: list[Record] = field(default_factory=list)
    streams_closed_early: int = 0
    max_concurrency: int = 0

    def __post_init__(self) -> None:
        self._faults: deque[tuple[str, float | None] | None] = deque()
        self._window: deque[float] = deque()
        self._active = 0
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # knobs and counters
    def fail_next(self, kind: str, count: int = 1, retry_after: float | None = None,
                  after: int = 0) -> None:
        """Answer `count` requests with a fault, once `after` requests have gone through."""
        if kind not in FAULTS:
            raise ValueError(f"kind must be one of {FAULTS}")
        with self._lock:
            self._faults.extend([None] * after + [(kind, retry_after)] * count)

    def calls(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self._window.clear()
            self.streams_closed_early = 0
            self.max_concurrency = 0

    # lifecycle
    def start(self) -> FakeOpenAI:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-openai", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/hooks/{name}", self._hook, methods=["POST"]),  # a webhook receiver
        ])

    # handlers
    async def _chat(self, request: Request) -> Response:
        record, early = await self._begin(request)
        if early is not None:
            return self._end(record, early)
        body = record.body
        text = self.reply(body["messages"]) if self.reply else _summary(body["messages"])
        model = body.get("model", "fake")
        if body.get("stream"):
            broken = record.path == "broken"
            record.path = request.url.path
            return self._end(record, StreamingResponse(
                self._stream(text, model, broken), media_type="text/event-stream"))
        words = len(text.split())
        return self._end(record, JSONResponse({
            "id": "chatcmpl-fake", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": words,
                      "total_tokens": 10 + words}}))

    async def _embeddings(self, request: Request) -> Response:
        record, early = await self._begin(request)
        if early is not None:
            return self._end(record, early)
        inputs = record.body["input"]
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        data = [{"object": "embedding", "index": i, "embedding": _vector(t, self.dimensions)}
                for i, t in enumerate(texts)]
        return self._end(record, JSONResponse({
            "object": "list", "data": data, "model": record.body.get("model", "fake"),
            "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)}}))

    async def _hook(self, request: Request) -> Response:
        record, early = await self._begin(request)
        return self._end(record, early or Response(status_code=204))

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": "fake-chat", "object": "model"}, {"id": "fake-embed", "object": "model"}]})

    async def _begin(self, request: Request) -> tuple[Record, Response | None]:
        try:
            body = await request.json()
        except ValueError:
            body = None
        record = Record(request.url.path, body, time.monotonic())
        with self._lock:
            self.requests.append(record)
            self._active += 1
            self.max_concurrency = max(self.max_concurrency, self._active)
            fault = self._faults.popleft() if self._faults else None
            limited = self._over_limit(record.started)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if limited:
                return record, _error(429, "rate limit reached", {"Retry-After": "1"})
            if fault is None:
                return record, None
            kind, retry_after = fault
            if kind == "hang":
                await asyncio.Event().wait()  # until the client gives up or we stop
            if kind == "429":
                return record, _error(429, "slow down",
                                      {"Retry-After": f"{retry_after if retry_after is not None else 1:g}"})
            if kind == "500":
                return record, _error(500, "the server had an error")
            if kind == "400":
                return record, _error(400, "invalid request: bad parameter")
            record.path = "broken"  # broken_stream: the chat handler cuts the stream short
            return record, None
        finally:
            with self._lock:
                self._active -= 1

    def _end(self, record: Record, response: Response) -> Response:
        record.status = response.status_code
        record.ended = time.monotonic()
        return response

    def _over_limit(self, now: float) -> bool:
        if self.requests_per_minute is None:
            return False
        while self._window and self._window[0] < now - 60:
            self._window.popleft()
        if len(self._window) >= self.requests_per_minute:
            return True
        self._window.append(now)
        return False

    async def _stream(self, text: str, model: str, broken: bool) -> AsyncIterator[bytes]:
        pieces = re.findall(r"\S+\s*", text) or [""]
        completed = False
        try:
            for i, piece in enumerate(pieces):
                if broken and i == min(3, len(pieces) - 1):
                    raise ConnectionAbortedError("broken stream (fault injected)")
                delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
                chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
            yield b"data: [DONE]\n\n"
            completed = True
        finally:
            if not completed and not broken:
                with self._lock:
                    self.streams_closed_early += 1


def _summary(messages: list[dict[str, Any]]) -> str:
    last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    return "Summary: " + " ".join(str(last).split()[:30])


def _vector(text: str, dimensions: int) -> list[float]:
    vector = [0.0] * dimensions
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[int.from_bytes(digest[:4], "big") % dimensions] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"message": message, "type": "fake_error", "code": status}},
                        status_code=status, headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description="an OpenAI-compatible test server")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--rpm", type=int, default=None)
    args = parser.parse_args()
    server = FakeOpenAI(latency=args.latency, token_delay=args.token_delay,
                        requests_per_minute=args.rpm, port=args.port)
    uvicorn.run(server.app(), host="127.0.0.1", port=args.port, log_level="info")


if __name__ == "__main__":
    main()
