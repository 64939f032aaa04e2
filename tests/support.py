"""Real processes for the tests: PostgreSQL, Redis, uvicorn and ARQ workers on free ports."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

from longtask import samples
from longtask.broker import fair
from longtask.broker import keys as redis_keys
from longtask.config import Settings
from longtask.core.errors import Conflict, NotFound
from longtask.core.status import ACTIVE_SQL
from longtask.dev.embedded import free_port
from longtask.service import tasks as task_service
from longtask.service.deps import Deps

ROOT = Path(__file__).resolve().parents[1]
# LONGTASK_WEBHOOK_SECRET for a stack with a webhook URL (a fixed one: 32 bytes in base64)
WEBHOOK_SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"longtask tests").digest()).decode()
SAMPLES = samples.FOLDER  # the sample PDFs, package data (src/longtask/samples)
T = TypeVar("T")
METRICS_TOKEN = "metrics-token-for-tests"  # the stacks' LONGTASK_METRICS_TOKEN


async def wait_for(check: Callable[[], Awaitable[T]], timeout: float = 15.0,
                   what: str = "condition", interval: float = 0.02) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@asynccontextmanager
async def new_database(admin_url: str, prefix: str = "t") -> AsyncIterator[str]:
    """An empty database on the server of `admin_url`, dropped at the end: its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield name
        finally:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


def with_database(url: str, name: str) -> str:
    """`url` with its database replaced by `name`."""
    base, _, rest = url.rpartition("/")
    query = rest.partition("?")[2]
    return f"{base}/{name}" + (f"?{query}" if query else "")


class Proc:
    """One web or worker process, logging to a file the test report can show."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_dir: Path,
                 cwd: Path = ROOT) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.args, env=self.env, cwd=self.cwd, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def terminate(self, timeout: float = 40.0) -> int | None:
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        return self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: int, timeout: float) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        self.popen = None
        return code

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Web(Proc):
    """uvicorn serving `app` (the checkout's server.py unless told; `python`: another venv's),
    in `workers` processes (more than one: uvicorn's supervisor starts them)."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path, *,
                 python: str = sys.executable, app: Sequence[str] = ("server:app",),
                 cwd: Path = ROOT, workers: int = 1) -> None:
        self.port = free_port()
        several = ["--workers", str(workers)] if workers > 1 else []
        super().__init__(name, [python, "-m", "uvicorn", *app, "--host", "127.0.0.1", "--port",
                                str(self.port), "--timeout-graceful-shutdown", "5", *several],
                         env, log_dir, cwd)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 30.0) -> Web:
        async def up() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited:\n{self.tail()}")
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{self.url}/health", timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(up, timeout, f"{self.name} to answer /health", interval=0.05)
        return self


class Worker(Proc):
    """An ARQ worker on `settings` (the checkout's worker.py unless told)."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path, *,
                 python: str = sys.executable, settings: str = "worker.WorkerSettings",
                 cwd: Path = ROOT) -> None:
        super().__init__(name, [python, "-m", "arq", settings], env, log_dir, cwd)

    async def ready(self, redis: Any, timeout: float = 30.0) -> Worker:
        pattern = redis_keys.worker_key(f"*:{self.pid}:*")

        async def up() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited:\n{self.tail()}")
            return bool([k async for k in redis.scan_iter(match=pattern)])

        await wait_for(up, timeout, f"{self.name} to heartbeat", interval=0.05)
        return self


def fake_providers(fake: Any, concurrency: int = 3, **extra: str) -> dict[str, str]:
    """Settings that point a stack's LLM and embeddings at the test server (`FakeOpenAI`),
    with small embedding batches so a file takes a few steps."""
    return {"LONGTASK_LLM_URL": fake.base_url, "LONGTASK_EMBED_URL": fake.base_url,
            "LONGTASK_EMBED_MODEL": "fake", "LONGTASK_EMBED_BATCH": "2",
            "LONGTASK_WORKER_CONCURRENCY": str(concurrency), **extra}


def service_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGTASK_")}
    env.update({
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LONGTASK_KINDS": "tests.kinds_for_tests",
        "LONGTASK_TRIAL_KINDS": "1",  # `demo`, as under `longtask dev`
        "LONGTASK_HEARTBEAT_SECONDS": "0.5",
        "LONGTASK_LEASE_SECONDS": "5",
        "LONGTASK_REAPER_SECONDS": "1",
        "LONGTASK_RETRY_DELAYS": "0.2,0.4",
        "LONGTASK_WEBHOOK_RETRY_DELAYS": "0.2,0.4",
        "LONGTASK_WORKER_CONCURRENCY": "8",
        "LONGTASK_SSE_PING_SECONDS": "2",
        "LONGTASK_METRICS_TOKEN": METRICS_TOKEN,
        "LONGTASK_METRICS_REFRESH_SECONDS": "0",  # each scrape reads afresh
        "LONGTASK_MIN_SCHEDULE_SECONDS": "2",  # the schedule tests fire every 2 s
        # this checkout's code, even when the venv's editable install points at another
        "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT))),
        "LOG_LEVEL": "INFO",
    })
    env.update(extra)
    return env


async def sse_events(client: httpx.AsyncClient, task_id: str, *, last_event_id: int | None = None,
                     limit: int | None = None, params: dict[str, str] | None = None,
                     timeout: float = 30.0) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, event, data) of a task's stream until it closes, or until `limit` events came; the
    data without its `at`, which every event must have (see `sse_timed_events`)."""
    timed = await sse_timed_events(client, task_id, last_event_id=last_event_id, limit=limit,
                                   params=params, timeout=timeout)
    return [(seq, event, data) for seq, event, data, _ in timed]


async def sse_timed_events(client: httpx.AsyncClient, task_id: str, *,
                           last_event_id: int | None = None, limit: int | None = None,
                           params: dict[str, str] | None = None, timeout: float = 30.0
                           ) -> list[tuple[int, str, dict[str, Any], datetime]]:
    """(id, event, data, at) of a task's stream: `at` taken out of each event's data, where the
    SSE stream carries it, and checked to be in the wire form (`event_time`)."""
    import json

    from httpx_sse import aconnect_sse

    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    received: list[tuple[int, str, dict[str, Any], datetime]] = []
    async with asyncio.timeout(timeout):
        async with aconnect_sse(client, "GET", f"/tasks/{task_id}/events", headers=headers,
                                params=params) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue  # the retry hint and pings carry no data
                data = json.loads(sse.data)
                assert "at" in data, f"event {sse.id} {sse.event} has no `at`: {sse.data}"
                at = event_time(data.pop("at"))
                received.append((int(sse.id), sse.event, data, at))
                if limit is not None and len(received) >= limit:
                    break
    return received


_EVENT_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def event_time(text: Any) -> datetime:
    """An event's `at` as the wire carries it: ISO 8601 in UTC, to the microsecond, with a Z
    ("2026-11-30T16:04:05.123456Z"); the time, timezone-aware."""
    assert isinstance(text, str) and _EVENT_TIME.fullmatch(text), f"not an event time: {text!r}"
    at = datetime.fromisoformat(text)
    assert at.utcoffset() == timedelta(0)
    return at


def assert_event_times(seqs: Sequence[int], times: Sequence[datetime | None], start: datetime,
                       end: datetime) -> None:
    """Each event has a time, in UTC, between `start` and `end`, and the times of stored events
    (seq > 0; pass 0 for live text) never go backwards as seq goes up."""
    assert len(seqs) == len(times)
    stored = []
    for seq, at in zip(seqs, times, strict=True):
        assert at is not None, f"event {seq} has no time"
        assert at.tzinfo is not None and at.utcoffset() == timedelta(0), (seq, at)
        assert start <= at <= end, f"event {seq} at {at}, not between {start} and {end}"
        if seq > 0:
            stored.append((seq, at))
    stored.sort()
    for (seq_a, at_a), (seq_b, at_b) in zip(stored, stored[1:]):
        assert at_a <= at_b, f"event {seq_b} at {at_b} is earlier than event {seq_a} at {at_a}"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


async def task_status(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/tasks/{task_id}")
    response.raise_for_status()
    return dict(response.json())


async def wait_status(client: httpx.AsyncClient, task_id: str, statuses: set[str],
                      timeout: float = 20.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        task = await task_status(client, task_id)
        return task if task["status"] in statuses else None

    return await wait_for(check, timeout, f"task {task_id} to reach {statuses}")


async def cancel_open_tasks(pool: asyncpg.Pool, redis: Any, timeout: float = 15.0) -> None:
    """Cancel every task still pending or running, as `POST /tasks/{id}/cancel` does, and wait
    until the workers have stopped their items."""
    rows = await pool.fetch(f"SELECT id::text, tenant FROM tasks WHERE status IN {ACTIVE_SQL}")
    deps = Deps.open(Settings(), pool, redis)
    try:
        for row in rows:
            with contextlib.suppress(Conflict, NotFound):  # it ended meanwhile
                await task_service.cancel(deps, row["tenant"], row["id"])
    finally:
        await deps.close()

    async def stopped() -> bool:
        return not await pool.fetchval("SELECT count(*) FROM task_items WHERE status = 'running'")

    await wait_for(stopped, timeout, "the running items of the canceled tasks to stop")


async def assert_no_slot_held(redis: Any, queue: str, tenant: str) -> None:
    """Every dispatch slot the tenant took was given back, once: none of its item jobs is
    waiting or counted as dispatched (broker.fair)."""
    async def settled() -> bool:
        _, mine = await fair.depths(redis, queue, tenant)
        return mine.waiting == 0 and mine.dispatched == 0

    await wait_for(settled, timeout=15, what=f"{tenant}'s dispatch slots to be given back")


class CuttableProxy:
    """A TCP proxy on loopback in front of a web process, whose connections a test can cut,
    and which can refuse new ones for a while: a real dropped connection, as a client sees it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0  # accepted so far, refused ones included
        self.refusing = False
        self.no_streams = False  # answer event-stream requests 502, as a buffering proxy might
        self.streams_refused = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every open connection, both ways, at once."""
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._open.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if src is reader and self.no_streams and b"/events" in data.split(b"\r\n")[0]:
                        self.streams_refused += 1
                        writer.write(_BAD_GATEWAY)
                        await writer.drain()
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open.difference_update((writer, up_writer))


_BAD_GATEWAY = (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
                b"Content-Length: 48\r\nConnection: close\r\n\r\n"
                b'{"error": "bad_gateway", "detail": "no streams"}')
