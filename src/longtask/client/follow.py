"""What the sync and the async client share when they follow a task: where a stream stands and
when to reconnect (`Cursor`), and when `wait` polls again or gives up (`Poll`). Pure: no I/O.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

import httpx
from httpx_sse import ServerSentEvent, SSEError

from longtask.client import models
from longtask.client.errors import (
    ClientError,
    ConnectionFailed,
    RateLimited,
    ServerError,
    Unavailable,
    WaitTimeout,
    error_for,
)
from longtask.client.models import Event

STREAM_READ_TIMEOUT = 60.0  # the server pings every 15 s; a silent minute is a dead connection
RECONNECT_ATTEMPTS = 8  # failed reconnects in a row before `follow` gives up (about 45 s)


@dataclass
class Cursor:
    """Where a followed stream stands: the last sequence number yielded, and the reconnects.

    Events at or below `last` are dropped (so nothing is yielded twice); a gap means the stream
    lost something and is reopened after `last`, which the server replays from Postgres.
    """

    task_id: str
    last: int = 0
    done: bool = False
    failures: int = 0
    wait_hint: float = 0.5  # the server's `retry:` hint, in seconds
    attempts: int = RECONNECT_ATTEMPTS
    _rand: random.Random = field(default_factory=random.Random, repr=False)

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": str(self.last)} if self.last else {}

    def accept(self, sse: ServerSentEvent) -> Event | None:
        """The event to yield for `sse`, or None for pings, hints and repeats. RateLimited for
        the answer to a stream over the tenant's limits (an `error` event, then the end), which
        `follow` waits out and reconnects after, as a browser does."""
        if sse.retry is not None:
            self.wait_hint = sse.retry / 1000
        if sse.event == "error" and sse.data and not sse.id:
            raise _refusal(sse.data)
        if sse.data and sse.event in models.LIVE_TYPES:
            # live text, never stored: it has no id of its own (a parser repeats the last one)
            return models.event(self.last, sse.event, json.loads(sse.data))
        if not sse.data or not sse.id:
            return None
        seq = int(sse.id)
        if seq <= self.last:
            return None
        if seq > self.last + 1:
            raise _Gap(f"event {seq} came after {self.last}")
        event = models.event(seq, sse.event, json.loads(sse.data))
        self.last, self.failures, self.done = seq, 0, event.terminal
        return event

    def backoff(self, exc: Exception | None, when: float | None = None) -> float:
        """Seconds to wait before reconnecting; raises once `attempts` failed in a row, or
        `WaitTimeout` once `when` has passed."""
        if timeout := expired(self.task_id, when):
            raise timeout
        self.failures += 1
        if self.failures > self.attempts:
            if isinstance(exc, ClientError):
                raise exc
            raise ConnectionFailed(f"the event stream kept dropping ({self.failures - 1} "
                                   f"reconnects): {exc or 'closed early'}") from exc
        delay: float = min(10.0, self.wait_hint * 2.0 ** (self.failures - 1))
        if isinstance(exc, (Unavailable, RateLimited)) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        delay *= 0.5 + self._rand.random() / 2
        left = remaining(when)
        return delay if left is None else min(delay, left)


class _Gap(Exception):
    pass


def _refusal(data: str) -> RateLimited:
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return RateLimited(data, status=429)
    wait = body.get("retry_after")
    return RateLimited(body.get("detail", data), status=429,
                       code=str(body.get("error", RateLimited.code)),
                       retry_after=float(wait) if isinstance(wait, (int, float)) else None)


# what makes `follow` reconnect rather than raise, and what `wait` outlives by polling;
# RateLimited: a stream over the tenant's open-stream limit (streams end, places free)
RECONNECT = (httpx.TransportError, Unavailable, RateLimited, _Gap,
             SSEError)  # SSEError: not an event stream
POLL_THROUGH = (ConnectionFailed, ServerError, RateLimited)


def deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def remaining(when: float | None) -> float | None:
    return None if when is None else when - time.monotonic()


def stream_timeout(base: httpx.Timeout, when: float | None) -> httpx.Timeout:
    """The client's timeouts, but reads may idle up to a minute (there are pings)."""
    left = remaining(when)
    read = STREAM_READ_TIMEOUT if left is None else max(0.01, min(STREAM_READ_TIMEOUT, left))
    return httpx.Timeout(base.connect, read=read, write=base.write, pool=base.pool)


def opened(response: httpx.Response) -> bool:
    """Whether an event stream has events to read: False on 204 (it has ended and everything
    was sent); a 4xx/5xx (its body read) raises the typed error."""
    if response.status_code >= 400:
        raise error_for(response)
    return response.status_code != 204


def expired(task_id: str, when: float | None) -> WaitTimeout | None:
    left = remaining(when)
    return WaitTimeout(f"task {task_id} did not end in time") if left is not None and \
        left <= 0 else None


class Poll:
    """The polling half of `wait`: which answers end it, and the pause before the next poll
    (0.2 s growing to 5 s; `WaitTimeout` once the deadline has passed)."""

    def __init__(self, task_id: str, timeout: float | None) -> None:
        self.task_id, self.when, self._n = task_id, deadline(timeout), 0

    def result(self, outcome: models.Task | ClientError) -> models.Task | None:
        """The ended task, None to poll again, or the error that ends the wait."""
        if isinstance(outcome, models.Task):
            return outcome if outcome.terminal else None
        if isinstance(outcome, POLL_THROUGH):
            return None
        raise outcome

    def pause(self) -> float:
        if timeout := expired(self.task_id, self.when):
            raise timeout
        self._n += 1
        delay = min(5.0, 0.2 * 1.5 ** self._n)
        left = remaining(self.when)
        return delay if left is None else min(delay, left)
