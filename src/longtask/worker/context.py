"""What a job kind's function gets: who it is, and progress, checkpoints and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import httpx
from arq import ArqRedis

from longtask.broker.admission import Admission
from longtask.broker.notices import Notices
from longtask.broker.outbox import Outbox
from longtask.config import Settings
from longtask.core.errors import JobCanceled
from longtask.core.events import check_data
from longtask.core.models import Claim, Report
from longtask.obs.metrics import WorkerMetrics
from longtask.service.deps import Deps
from longtask.store import events as event_store
from longtask.store import items as item_store
from longtask.worker.progress import ProgressWriter
from longtask.worker.textstream import TextStream

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass
class Services:
    """A worker process's shared connections, made once at start-up."""

    settings: Settings
    pool: asyncpg.Pool
    redis: ArqRedis  # also a plain redis.asyncio client
    http: httpx.AsyncClient
    worker_id: str
    metrics: WorkerMetrics
    resources: dict[str, Any] = field(default_factory=dict)
    outbox: Outbox = field(init=False)  # committed events, on their way to Redis
    progress: ProgressWriter = field(init=False)  # items' progress, on its way to Postgres
    notices: Notices = field(init=False)  # jobs claimed and ended, on their way to Redis

    deps: Deps = field(init=False)  # what the service's use cases run against

    def __post_init__(self) -> None:
        # the scheduler's firings pass the same admission as a submit
        self.deps = Deps.open(self.settings, self.pool, self.redis,
                              admission=Admission(self.settings, self.redis))
        self.outbox = self.deps.outbox
        self.progress = ProgressWriter(self.pool, self.outbox)
        self.notices = Notices(self.redis, self.settings)

    def resource(self, name: str, make: Callable[[], R]) -> R:
        """A per-process object kinds share (a parser pool, a model), made on first use and
        closed when the worker stops."""
        if name not in self.resources:
            self.resources[name] = make()
        return self.resources[name]  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.notices.close()
        await self.outbox.flush()
        for obj in self.resources.values():
            close = getattr(obj, "aclose", None) or getattr(obj, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    result = close()
                    if inspect.isawaitable(result):
                        await result
        self.resources.clear()
        await self.http.aclose()
        await self.pool.close()


class RunContext:
    """One run (attempt) of one item of a task: the worker's `longtask.JobContext`."""

    def __init__(self, claim: Claim, services: Services) -> None:
        self._claim = claim
        self._services = services
        self._cancel_reason: str | None = None
        self.checkpoint: dict[str, Any] = dict(claim.checkpoint or {})
        self.log = logging.LoggerAdapter(log, {"task_id": claim.task_id, "item_id": claim.item_id})

    # who
    @property
    def task_id(self) -> str:
        return self._claim.task_id

    @property
    def item_id(self) -> str:
        return self._claim.item_id

    @property
    def kind(self) -> str:
        return self._claim.kind

    @property
    def tenant(self) -> str:
        return self._claim.tenant

    @property
    def index(self) -> int:
        """The item's position in its task (0 for a task of one item)."""
        return self._claim.index

    @property
    def name(self) -> str:
        return self._claim.name

    @property
    def attempt(self) -> int:
        """1 on the first run; more after a retry or a crash."""
        return self._claim.attempt

    @property
    def params(self) -> Any:
        """The task's params, as submitted (each item also gets its own payload)."""
        return self._claim.params

    # shared services
    @property
    def pool(self) -> asyncpg.Pool:
        return self._services.pool

    @property
    def payload(self) -> Any:
        """This item's own input (the task's params, for a task of one item)."""
        return self._claim.payload

    @property
    def worker_id(self) -> str:
        """Who holds the lease: every write of this run is conditional on it."""
        return self._services.worker_id

    @property
    def redis(self) -> ArqRedis:
        return self._services.redis

    @property
    def outbox(self) -> Outbox:
        return self._services.outbox

    @property
    def deps(self) -> Deps:
        return self._services.deps

    @property
    def http(self) -> httpx.AsyncClient:
        return self._services.http

    @property
    def settings(self) -> Settings:
        return self._services.settings

    def resource(self, name: str, make: Callable[[], R]) -> R:
        """See `Services.resource`."""
        return self._services.resource(name, make)

    # reporting
    async def progress(self, percent: float, message: str | None = None, *,
                       stage: str | None = None, **data: Any) -> None:
        """Report this item's progress (0-100); the task's overall percent follows. `data`
        goes in the event; TypeError for a key `at` (every event carries its time there)."""
        check_data(data)
        self.raise_if_canceled()
        percent = max(0.0, min(100.0, float(percent)))
        await self._services.progress.write(Report(
            self.task_id, self.item_id, self.worker_id, percent, stage, message, data))

    async def emit(self, type_: str, **data: Any) -> None:
        """A custom event on the task's stream (`type_` other than status/progress/item);
        TypeError for a key `at` in `data` (every event carries its time there)."""
        check_data(data)
        event = await event_store.append(self.pool, self.task_id, type_,
                                         {"item": self.index, **data})
        if event is not None:
            self.outbox.send([event])

    def text_stream(self, step: int = 0) -> TextStream:
        """Relay an LLM call's text live (see `longtask.worker.textstream`)."""
        return TextStream(self, step)

    async def save_checkpoint(self, **values: Any) -> None:
        """Merge JSON-able values into the checkpoint a re-run of this item starts from."""
        self.checkpoint.update(values)
        saved = await item_store.save_checkpoint(
            self.pool, self.item_id, self.worker_id, values
        )
        if not saved:
            self.cancel("lease_lost")
            self.raise_if_canceled()

    # cancellation
    @property
    def canceled(self) -> bool:
        return self._cancel_reason is not None

    @property
    def cancel_reason(self) -> str | None:
        return self._cancel_reason

    def raise_if_canceled(self) -> None:
        """Call between pages, chunks or calls in a long loop that does not await."""
        if self._cancel_reason is not None:
            raise JobCanceled(f"stopped: {self._cancel_reason}")

    def cancel(self, reason: str) -> None:
        if self._cancel_reason is None:
            self._cancel_reason = reason

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep that ends early, raising JobCanceled, when the item is canceled."""
        self.raise_if_canceled()
        await asyncio.sleep(seconds)
        self.raise_if_canceled()
