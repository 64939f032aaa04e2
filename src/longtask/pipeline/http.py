"""Calls to OpenAI-compatible endpoints: one place that sorts failures and retries them.

Transport errors, timeouts, 408, 429 and 5xx are `TransientError`s, retried here a few times with
exponential backoff and jitter; a `Retry-After` the server sends is honoured (up to a cap). Any
other 4xx is a `PermanentError`: asking again would not help. What is still transient after the
last attempt goes up to the item, which is retried later with the longer item delays.

A `CallObserver` put in `observer` (the worker's metrics) hears of each attempt's duration and
of each retry; the pipeline itself knows nothing of what listens.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from longtask.core.errors import PermanentError, TransientError

T = TypeVar("T")

MAX_RETRY_AFTER = 60.0


class CallObserver(Protocol):
    def attempted(self, service: str, seconds: float) -> None: ...

    def retried(self, service: str) -> None: ...


# who hears of provider calls made in this context; the worker sets it around an item's run
observer: ContextVar[CallObserver | None] = ContextVar("longtask_call_observer", default=None)


class _Wait:
    """Exponential backoff with jitter, but never shorter than the server's Retry-After."""

    def __init__(self, initial: float, cap: float) -> None:
        self._backoff = wait_exponential_jitter(multiplier=initial, max=cap)

    def __call__(self, state: RetryCallState) -> float:
        delay = self._backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, MAX_RETRY_AFTER))
        return delay


async def with_retries(call: Callable[[], Awaitable[T]], *, attempts: int = 4,
                       initial: float = 0.5, cap: float = 20.0, service: str | None = None) -> T:
    """Run `call`, retrying TransientErrors; `attempts` counts the first call too. With a
    `service` name, the context's observer hears of each attempt and retry."""
    watcher = observer.get() if service else None

    def note_retry(state: RetryCallState) -> None:
        if watcher is not None and service:
            watcher.retried(service)

    async for attempt in AsyncRetrying(stop=stop_after_attempt(attempts), wait=_Wait(initial, cap),
                                       retry=retry_if_exception_type(TransientError), reraise=True,
                                       before_sleep=note_retry):
        with attempt:
            started = time.perf_counter()
            try:
                return await call()
            finally:
                if watcher is not None and service:
                    watcher.attempted(service, time.perf_counter() - started)
    raise AssertionError("unreachable")  # pragma: no cover


def check(response: httpx.Response, service: str) -> None:
    """Raise the typed error an HTTP answer stands for; nothing for a 2xx."""
    status = response.status_code
    if status < 400:
        return
    detail = _detail(response)
    if status == 429 or status == 408 or status >= 500:
        raise TransientError(f"{service} answered {status}: {detail}",
                             code=f"{service}_unavailable",
                             retry_after=retry_after(response.headers.get("retry-after")))
    raise PermanentError(f"{service} refused the request ({status}): {detail}",
                         code=f"{service}_rejected")


def transport_error(exc: httpx.HTTPError, service: str) -> TransientError:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return TransientError(f"{service} call {kind}: {type(exc).__name__} {exc}"[:300],
                          code=f"{service}_unavailable")


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _detail(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", body["error"]))[:200]
    return str(body)[:200]
