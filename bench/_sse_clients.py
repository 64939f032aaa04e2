"""Many open SSE streams, held by several client processes so that the client is not what limits
a fan-out measurement.

    async with Clients(4) as clients:
        opened = await clients.open([(port, key, task, last_seq), ...], deadline)
        await clients.start()
        ...                                   # the window
        seen = await clients.stop(w0, w1)     # latencies and per-stream counts
        await clients.close()

Each process is a plain asyncio loop of Protocols (a regex over each chunk for the events' emit
stamps, no SSE parser); the parent talks to it over a Pipe, one command at a time.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench._stack import cpu_seconds, raise_fd_limit

_STAMP = re.compile(rb'"t":([0-9.]+)')
PARALLEL_OPENS = 100  # per client process

Spec = tuple[int, str, str, int]  # port, API key, task id, the event to resume after


@dataclass
class Seen:
    """What the streams received while recording, for events emitted in [w0, w1)."""

    latencies: list[float] = field(default_factory=list)  # seconds, emit -> receive
    counts: list[tuple[str, int]] = field(default_factory=list)  # (task, events) per stream
    dropped: int = 0  # streams the server closed while they were open


class Stream(asyncio.Protocol):
    """One SSE stream: sends the request, then notes (emit, receive) of every stamped event."""

    def __init__(self, task: str, request: bytes, opened: asyncio.Future[None],
                 holder: Holder) -> None:
        self.task, self.request, self.opened, self.holder = task, request, opened, holder
        self.tail = b""
        self.stamps: list[tuple[float, float]] = []
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        data = self.tail + data
        cut = data.rfind(b"\n") + 1
        self.tail = data[cut:]
        if not self.opened.done():
            if not data.startswith(b"HTTP/1.1 200"):
                self.opened.set_exception(RuntimeError(data[:200].decode(errors="replace")))
                return
            self.opened.set_result(None)
        if self.holder.recording:
            self.stamps += [(float(m), now) for m in _STAMP.findall(data, 0, cut)]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before the answer"))


class Holder:
    """The streams of one client process."""

    def __init__(self) -> None:
        self.recording = False
        self.streams: list[Stream] = []
        self.transports: list[asyncio.Transport] = []

    async def open(self, specs: list[Spec], deadline: float) -> int:
        """Open the streams; how many answered 200 within a minute each and by `deadline`
        (wall-clock time)."""
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(PARALLEL_OPENS)

        async def one(port: int, key: str, task: str, since: int) -> bool:
            request = (f"GET /tasks/{task}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       f"Last-Event-ID: {since}\r\nAuthorization: Bearer {key}\r\n"
                       "Accept: text/event-stream\r\n\r\n").encode()
            async with gate:
                if time.time() > deadline:
                    return False
                opened: asyncio.Future[None] = loop.create_future()
                stream = Stream(task, request, opened, self)
                try:
                    transport, _ = await loop.create_connection(lambda: stream, "127.0.0.1", port)
                    self.transports.append(transport)
                    await asyncio.wait_for(opened, max(1.0, min(60.0, deadline - time.time())))
                except (OSError, RuntimeError, TimeoutError):
                    return False
                self.streams.append(stream)
                return True

        return sum(await asyncio.gather(*(one(*spec) for spec in specs)))

    def start(self) -> None:
        for stream in self.streams:
            stream.stamps = []
        self.recording = True

    def stop(self, w0: float, w1: float) -> Seen:
        self.recording = False
        seen = Seen()
        for stream in self.streams:
            inside = [(t, now) for t, now in stream.stamps if w0 <= t < w1]
            seen.latencies += [now - t for t, now in inside]
            seen.counts.append((stream.task, len(inside)))
            seen.dropped += stream.closed
        return seen

    def close(self) -> None:
        for transport in self.transports:
            transport.abort()
        self.streams, self.transports = [], []


def serve(conn: Connection) -> None:
    """A client process: run the parent's commands until "exit"."""
    raise_fd_limit()
    asyncio.run(_serve(conn))


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    holder = Holder()
    while True:
        command, *args = await loop.run_in_executor(None, conn.recv)
        if command == "exit":
            holder.close()
            return
        answer: Any = None
        if command == "open":
            answer = await holder.open(*args)
        elif command == "start":
            holder.start()
        elif command == "stop":
            answer = holder.stop(*args)
        elif command == "close":
            holder.close()
            await asyncio.sleep(0)
        conn.send(answer)


class Clients:
    """`count` client processes (spawned), with the streams spread evenly over them."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for _ in range(count):
            ours, theirs = context.Pipe()
            proc = context.Process(target=serve, args=(theirs,), daemon=True)
            self.conns.append(ours)
            self.procs.append(proc)

    async def __aenter__(self) -> Clients:
        for proc in self.procs:
            proc.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.conns:
            conn.send(("exit",))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def cpu(self) -> list[float]:
        """CPU seconds used so far by each client process."""
        return [cpu_seconds(pid) for pid in self.pids]

    async def _all(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        loop = asyncio.get_running_loop()
        for conn, command in zip(self.conns, commands, strict=True):
            conn.send(command)
        return list(await asyncio.gather(*(loop.run_in_executor(None, conn.recv)
                                           for conn in self.conns)))

    async def open(self, specs: list[Spec], deadline: float) -> int:
        """Open the streams, spec n in process n % count; how many are open."""
        n = len(self.conns)
        return sum(await self._all([("open", specs[i::n], deadline) for i in range(n)]))

    async def start(self) -> None:
        await self._all([("start",)] * len(self.conns))

    async def stop(self, w0: float, w1: float) -> Seen:
        seen = Seen()
        for part in await self._all([("stop", w0, w1)] * len(self.conns)):
            seen.latencies += part.latencies
            seen.counts += part.counts
            seen.dropped += part.dropped
        return seen

    async def close(self) -> None:
        await self._all([("close",)] * len(self.conns))
