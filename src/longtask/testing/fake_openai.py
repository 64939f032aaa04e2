"""An OpenAI-compatible server of our own, on loopback, so tests and benchmarks exercise the real
httpx client code without a paid API.

    with FakeOpenAI(latency=0.5) as server:          # uvicorn on a free port, in a thread
        settings.llm_url = server.base_url          # http://127.0.0.1:PORT/v1
        server.fail_next("429", retry_after=1)       # then "500", "400", "hang", "broken_stream"
        ...
        assert server.calls("/v1/chat/completions") == 2

    python -m longtask.testing.fake_openai --port 8001 --latency 0.5   # in the foreground

Chat replies are "Summary: " and the first 30 words of the last user message, or what
`reply(messages)` returns: a text, or {"content": ..., "tool_calls": [{"name", "arguments"}]};
streamed as chat.completion.chunk events when asked (tool calls as OpenAI streams them).
Embeddings are a hashed bag of words, L2-normalised, so texts that share words get similar
vectors. `POST /hooks/{name}` is a webhook receiver (204). Knobs (`latency`, `token_delay`,
`requests_per_minute` per `rate_window` seconds, `reply`, `dimensions`) may be changed while the
server runs; they and the fault queue apply to every POST route.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
MODELS = "/v1/models"
HOOKS = "/hooks/{name}"
FAULTS = ("429", "500", "400", "hang", "broken_stream")
SUMMARY_WORDS = 30

Messages = list[dict[str, Any]]
ReplyFn = Callable[[Messages], "str | dict[str, Any]"]  # text, or {"content", "tool_calls"}

_RECORD = "fake_openai.record"  # the scope key under which _Meter hands a request its Record


@dataclass
class Record:
    """One request as the server saw it (times are `time.monotonic()`)."""

    path: str
    body: Any  # None until the server has read it (the record is listed as the request comes in)
    started: float
    status: int = 0  # the status sent; 0 if nothing was (a hang the client gave up on)
    ended: float = 0.0  # just before the last byte went out, or when the connection was dropped
    fault: str | None = None  # the injected fault, or "rate_limit"
    sent: list[float] = field(default_factory=list)  # when each streamed chunk went out


class InjectedFault(Exception):
    """Raised on purpose to make uvicorn drop a connection mid-answer (`broken_stream`)."""


class FakeOpenAI:
    """An OpenAI-compatible chat and embeddings server with knobs for latency and faults."""

    def __init__(self, *, latency: float = 0.0, token_delay: float = 0.0,
                 requests_per_minute: int | None = None, rate_window: float = 60.0,
                 dimensions: int = 384,
                 reply: ReplyFn | None = None,
                 models: Sequence[str] = ("fake-chat", "fake-embed"),
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.latency = latency  # seconds before each answer
        self.token_delay = token_delay  # seconds between streamed chunks
        self.requests_per_minute = requests_per_minute  # None: no limit
        self.rate_window = rate_window  # seconds the limit counts over ("minute"; tests shorten it)
        self.dimensions = dimensions
        self.reply = reply  # messages -> content, instead of the default summary
        self.models = tuple(models)
        self.host = host
        self.port = port  # 0: a free port, chosen by start() and kept for a restart
        self.requests: list[Record] = []
        self.max_concurrency = 0
        self.streams_closed_early = 0
        self._active = 0
        self._faults: deque[tuple[str, float | None] | None] = deque()
        self._window: deque[float] = deque()  # when the admitted requests of the last minute came
        self._lock = threading.Lock()
        self._stopping = asyncio.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, `http://HOST:PORT/v1` (the port is known once started)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def in_flight(self) -> int:
        """Requests being answered right now, streams included."""
        return self._active

    def fail_next(self, kind: str, count: int = 1, retry_after: float | None = None,
                  after: int = 0) -> None:
        """Answer `count` requests with fault `kind` (one of FAULTS), once `after` more requests
        have been answered normally. Faults queue up and are used one per request, in order."""
        if kind not in FAULTS:
            raise ValueError(f"kind must be one of {FAULTS}, not {kind!r}")
        with self._lock:
            self._faults.extend([None] * after + [(kind, retry_after)] * count)

    def calls(self, path: str) -> int:
        """How many requests came in for `path`, e.g. "/v1/embeddings"."""
        return sum(1 for r in list(self.requests) if r.path == path)

    def reset(self) -> None:
        """Forget requests, counters, queued faults and the rate window (knobs stay as they are)."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self._window.clear()
            self.streams_closed_early = 0
            self.max_concurrency = self._active

    def app(self) -> Starlette:
        """The ASGI app that `start()` and `serve()` run."""
        return Starlette(
            routes=[Route(CHAT, self._chat, methods=["POST"]),
                    Route(EMBEDDINGS, self._embeddings, methods=["POST"]),
                    Route(MODELS, self._models, methods=["GET"]),
                    Route(HOOKS, self._hook, methods=["POST"])],
            middleware=[Middleware(_Meter, server=self)],
            exception_handlers={_Refusal: _refusal})

    def start(self) -> FakeOpenAI:
        """Serve in a background thread; return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the fake OpenAI server is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))  # bound here, so that no one takes the port meanwhile
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._stopping = asyncio.Event()
        config = self._config(log_config=None, access_log=False)  # leave logging setup alone
        server = self._server = _Server(config, self._stopping)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                        name=f"fake-openai:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving; requests still waiting (latency, hang) are answered or dropped at once."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(10)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        self._server = self._thread = None

    def serve(self) -> None:
        """Serve in the foreground until interrupted (the `__main__` entry)."""
        self._stopping = asyncio.Event()
        _Server(self._config(host=self.host, port=self.port, log_level="info"),
                self._stopping).run()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeOpenAI:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await anyio.to_thread.run_sync(self.stop)  # the loop's own clients keep running meanwhile

    # handlers

    async def _chat(self, request: Request) -> Response:
        body, broken = await self._admit(request, "messages")
        messages = body["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise _Refusal(_error(400, "'messages' must be a list of objects"))
        reply = _Reply.of(self.reply(messages) if self.reply else _summary(messages))
        model = str(body.get("model") or self.models[0])
        prompt = sum(len(_text(m.get("content")).split()) for m in messages)
        usage = _usage(prompt, len(reply.content.split()))
        if body.get("stream"):
            options = body.get("stream_options") or {}
            chunks = _chunks(reply, model, usage if options.get("include_usage") else None)
            return _EventStream(self, chunks, broken)
        payload = {"id": _id(), "object": "chat.completion", "created": int(time.time()),
                   "model": model, "usage": usage,
                   "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                                "message": reply.message()}]}
        return _Dropped(payload) if broken else JSONResponse(payload)

    async def _embeddings(self, request: Request) -> Response:
        body, broken = await self._admit(request, "input")
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _Refusal(_error(400, "'input' must be a string or a non-empty list of strings"))
        dimensions = body.get("dimensions") or self.dimensions
        if not isinstance(dimensions, int) or dimensions < 1:
            raise _Refusal(_error(400, "'dimensions' must be a positive integer"))
        data = [{"object": "embedding", "index": i, "embedding": embedding(t, dimensions)}
                for i, t in enumerate(texts)]
        words = sum(len(t.split()) for t in texts)
        payload = {"object": "list", "data": data,
                   "model": str(body.get("model") or self.models[-1]),
                   "usage": {"prompt_tokens": words, "total_tokens": words}}
        return _Dropped(payload) if broken else JSONResponse(payload)

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "longtask"}
            for m in self.models]})

    async def _hook(self, request: Request) -> Response:
        _, broken = await self._admit(request, None)
        return _Dropped({"received": True}) if broken else Response(status_code=204)

    async def _admit(self, request: Request, required: str | None) -> tuple[dict[str, Any], bool]:
        """Read the body and play the knobs: rate limit, then the next fault, then latency.
        Returns the body and whether to break the answer; raises _Refusal to answer otherwise."""
        record: Record = request.scope[_RECORD]
        try:
            record.body = await request.json()
        except ValueError:
            record.body = None
        with self._lock:
            wait = self._rate_limited(record.started)
            fault = None if wait is not None or not self._faults else self._faults.popleft()
        kind, retry_after = fault or (None, None)
        record.fault = "rate_limit" if wait is not None else kind
        if kind == "hang":
            raise _Refusal(await self._hang(request.receive))
        await self._pause(self.latency)
        if wait is not None:
            raise _Refusal(_too_many("rate limit reached for requests", wait, exact=False))
        if kind == "429":
            raise _Refusal(_too_many("rate limit reached (fault injected)",
                                     1.0 if retry_after is None else retry_after))
        if kind == "500":
            raise _Refusal(_error(500, "the server had an error (fault injected)", "server_error"))
        if kind == "400":
            raise _Refusal(_error(400, "invalid request: bad parameter (fault injected)"))
        body = record.body if isinstance(record.body, dict) else None
        if required is not None and (body is None or required not in body):
            raise _Refusal(_error(400, f"a JSON object with '{required}' is required"))
        return body or {}, kind == "broken_stream"

    def _rate_limited(self, now: float) -> float | None:
        """Seconds until the sliding minute has room, or None if this request may pass (and is
        counted). Call with the lock held."""
        limit = self.requests_per_minute
        if limit is None:
            return None
        window = self.rate_window
        while self._window and self._window[0] <= now - window:
            self._window.popleft()
        if len(self._window) < limit:
            self._window.append(now)
            return None
        oldest = self._window[len(self._window) - limit] if limit > 0 else now
        return oldest + window - now

    async def _pause(self, seconds: float) -> None:
        """Wait without blocking other requests; cut short when the server stops."""
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self._stopping.wait()
        else:
            await anyio.lowlevel.checkpoint()

    async def _hang(self, receive: Receive) -> Response:
        """Answer nothing until the client gives up (then nothing at all) or the server stops."""
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            await self._stopping.wait()
            group.cancel_scope.cancel()
        if self._stopping.is_set():
            return _error(503, "the server is shutting down", "server_error")
        return _Silence()

    def _enter(self, record: Record) -> None:
        with self._lock:
            self.requests.append(record)
            self._active += 1
            self.max_concurrency = max(self.max_concurrency, self._active)

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1

    def _count_closed_early(self) -> None:
        with self._lock:
            self.streams_closed_early += 1

    def _config(self, **options: Any) -> uvicorn.Config:
        config = uvicorn.Config(self.app(), lifespan="off", ws="none",
                                timeout_graceful_shutdown=2, **options)
        _quiet_injected_faults()  # after Config, whose logging setup may reset the loggers
        return config


@dataclass
class _Reply:
    """What the assistant says: text, and tool calls ({"name", "arguments"} each)."""

    content: str
    tool_calls: list[dict[str, Any]]

    @classmethod
    def of(cls, said: str | dict[str, Any]) -> _Reply:
        if isinstance(said, str):
            return cls(said, [])
        calls = [{"id": f"call_{secrets.token_hex(4)}", "type": "function", "function": {
            "name": c["name"], "arguments": json.dumps(c.get("arguments", {}))}}
            for c in said.get("tool_calls", [])]
        return cls(str(said.get("content") or ""), calls)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    def message(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        return out


class _Refusal(Exception):
    """Carries the response that replaces the normal answer (an error, a hang's outcome)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def _refusal(request: Request, exc: Exception) -> Response:
    return exc.response if isinstance(exc, _Refusal) else _error(500, str(exc), "server_error")


class _Meter:
    """ASGI middleware: records each request, its status and end, and the concurrency."""

    def __init__(self, app: ASGIApp, server: FakeOpenAI) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = Record(scope["path"], None, time.monotonic())
        scope[_RECORD] = record
        self.server._enter(record)

        async def noted(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            elif not message.get("more_body", False):
                record.ended = time.monotonic()  # before the last byte leaves, never after
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            record.ended = record.ended or time.monotonic()
            self.server._leave()


class _EventStream(Response):
    """Chunks as server-sent events, `token_delay` apart, then `data: [DONE]`. Counts a client
    that leaves before the end; when `broken`, drops the connection after a few chunks instead.

    Chunks keep to a schedule (a late one does not delay the rest), so the rate is exactly one
    per `token_delay`, and the time each goes out is noted in the request's `Record.sent`: a
    benchmark measures how long a token takes from here to its reader."""

    media_type = "text/event-stream"

    def __init__(self, server: FakeOpenAI, chunks: list[bytes], broken: bool) -> None:
        self.server, self.chunks, self.broken = server, chunks, broken
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache"})  # no body: no Content-Length, chunked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        chunks = self.chunks[:min(3, len(self.chunks) - 1)] if self.broken else self.chunks
        sent: list[float] = scope[_RECORD].sent
        done = False
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            due = time.monotonic()
            for chunk in chunks:
                sent.append(time.monotonic())
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                due += self.server.token_delay
                await self.server._pause(due - time.monotonic())
            if not self.broken:
                await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
                done = True
            group.cancel_scope.cancel()
        if self.broken:
            raise InjectedFault("broken_stream: the connection was dropped before [DONE]")
        if not done:
            self.server._count_closed_early()


class _Dropped(JSONResponse):
    """Starts a JSON answer, then drops the connection half-way through the body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[:len(self.body) // 2],
                    "more_body": True})
        raise InjectedFault("broken_stream: the connection was dropped mid-answer")


class _Silence(Response):
    """No answer at all: the client has gone."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


class _Server(uvicorn.Server):
    """uvicorn's server, which first releases waiting requests when it shuts down, so that a stop
    takes a fraction of a second even with hangs outstanding."""

    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self.stopping = stopping

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.stopping.set()
        await super().shutdown(sockets)


class _QuietInjectedFaults(logging.Filter):
    """Drops uvicorn's traceback for connections we break on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedFault))


def embedding(text: str, dimensions: int = 384) -> list[float]:
    """A deterministic unit vector: each word adds one to a hashed coordinate (only additions,
    so that words never cancel out into a zero vector)."""
    vector = [0.0] * dimensions
    for word in re.findall(r"\w+", text.lower()) or [""]:
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[int.from_bytes(digest, "big") % dimensions] += 1.0
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _quiet_injected_faults() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietInjectedFaults) for f in logger.filters):
        logger.addFilter(_QuietInjectedFaults())


def _summary(messages: Messages) -> str:
    last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    return "Summary: " + " ".join(_text(last).split()[:SUMMARY_WORDS])


def _text(content: Any) -> str:
    """A message's text, whether a string or a list of content parts."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _chunks(reply: _Reply, model: str, usage: dict[str, int] | None) -> list[bytes]:
    """The chat.completion.chunk events for `reply`, a word each, without the closing [DONE]."""
    ident, created = _id(), int(time.time())
    pieces = re.findall(r"\s*\S+\s*", reply.content) or [reply.content]
    choices = [{"index": 0, "delta": {"role": "assistant", "content": pieces[0]},
                "finish_reason": None}]
    choices += [{"index": 0, "delta": {"content": p}, "finish_reason": None} for p in pieces[1:]]
    for index, call in enumerate(reply.tool_calls):  # a call's name first, its arguments in two
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        choices.append({"index": 0, "finish_reason": None, "delta": {"tool_calls": [{
            "index": index, "id": call["id"], "type": "function",
            "function": {"name": call["function"]["name"], "arguments": arguments[:half]}}]}})
        choices.append({"index": 0, "finish_reason": None, "delta": {"tool_calls": [{
            "index": index, "function": {"arguments": arguments[half:]}}]}})
    choices.append({"index": 0, "delta": {}, "finish_reason": reply.finish_reason})
    chunks: list[dict[str, Any]] = [{"choices": [c]} for c in choices]
    if usage is not None:
        chunks.append({"choices": [], "usage": usage})
    return [b"data: " + json.dumps({"id": ident, "object": "chat.completion.chunk",
                                    "created": created, "model": model, **c}).encode() + b"\n\n"
            for c in chunks]


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _id() -> str:
    return f"chatcmpl-{secrets.token_hex(6)}"


def _error(status: int, message: str, kind: str = "invalid_request_error",
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None,
                                   "code": str(status)}}, status_code=status, headers=headers)


def _too_many(message: str, seconds: float, exact: bool = True) -> JSONResponse:
    """A 429 asking to wait `seconds`: as given (a fault), or rounded up to whole seconds."""
    after = f"{seconds:g}" if exact else str(max(1, math.ceil(seconds)))
    headers = {"Retry-After": after, "retry-after-ms": str(round(float(after) * 1000))}
    return _error(429, message, "requests", headers)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m longtask.testing.fake_openai`: serve in the foreground."""
    parser = argparse.ArgumentParser(description="an OpenAI-compatible test server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute, then 429")
    parser.add_argument("--dimensions", type=int, default=384, help="embedding size")
    args = parser.parse_args(argv)
    server = FakeOpenAI(latency=args.latency, token_delay=args.token_delay,
                        requests_per_minute=args.rpm, dimensions=args.dimensions,
                        host=args.host, port=args.port)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
