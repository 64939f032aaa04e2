"""What a job kind's function is handed: `JobContext`, the job author's view of one run of one
item. It is a protocol: the worker supplies the implementation (`longtask.worker.context`), so
importing the public API costs no I/O library."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from longtask.config import Settings

R = TypeVar("R")


class TextWriter(Protocol):
    """Live text of one LLM call on the task's stream (`JobContext.text_stream`)."""

    step: int
    text: str

    async def write(self, delta: str) -> None: ...

    async def restart(self) -> None: ...

    async def close(self) -> None: ...


class JobContext(Protocol):
    """One run (attempt) of one item of a task."""

    checkpoint: dict[str, Any]  # what a re-run of this item starts from
    log: logging.LoggerAdapter[logging.Logger]

    # who
    @property
    def task_id(self) -> str: ...

    @property
    def item_id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def tenant(self) -> str: ...

    @property
    def index(self) -> int:
        """The item's position in its task (0 for a task of one item)."""

    @property
    def name(self) -> str: ...

    @property
    def attempt(self) -> int:
        """1 on the first run; more after a retry or a crash."""

    @property
    def params(self) -> Any:
        """The task's params, as submitted."""

    @property
    def payload(self) -> Any:
        """This item's own input (the task's params, for a task of one item)."""

    # what the worker shares with its kinds
    @property
    def settings(self) -> Settings: ...

    @property
    def pool(self) -> Any:
        """The worker's asyncpg pool."""

    @property
    def redis(self) -> Any:
        """The worker's Redis client."""

    @property
    def http(self) -> Any:
        """The worker's httpx.AsyncClient."""

    @property
    def worker_id(self) -> str:
        """Who holds the lease: every write of this run is conditional on it."""

    def resource(self, name: str, make: Callable[[], R]) -> R:
        """A per-process object kinds share (a parser pool, a model), made on first use and
        closed when the worker stops."""

    # reporting
    def progress(self, percent: float, message: str | None = None, *,
                 stage: str | None = None, **data: Any) -> Awaitable[None]:
        """Report this item's progress (0-100); the task's overall percent follows. `data`
        goes in the event; TypeError for a key `at` (every event carries its time there)."""

    def emit(self, type_: str, **data: Any) -> Awaitable[None]:
        """A custom event on the task's stream (`type_` other than status/progress/item);
        TypeError for a key `at` in `data` (every event carries its time there)."""

    def text_stream(self, step: int = 0) -> TextWriter:
        """Relay an LLM call's text live."""

    def save_checkpoint(self, **values: Any) -> Awaitable[None]:
        """Merge JSON-able values into the checkpoint a re-run of this item starts from."""

    # cancellation
    @property
    def canceled(self) -> bool: ...

    def raise_if_canceled(self) -> None:
        """Call between pages, chunks or calls in a long loop that does not await."""

    def cancel(self, reason: str) -> None: ...

    def sleep(self, seconds: float) -> Awaitable[None]:
        """asyncio.sleep that ends early, raising JobCanceled, when the item is canceled."""
