"""What the sync and the async client share: each request as a `Call` (what to send, how to read
the answer) and the bookkeeping of a followed stream. Pure: no I/O here, so the two clients
differ only in how they send and wait.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent

from longtask import client_models as models
from longtask.client_errors import (ClientError, ConnectionFailed, RateLimited, ServerError,
                                    Unavailable, WaitTimeout, error_for)
from longtask.client_models import Event

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
UploadItem = str | os.PathLike[str] | tuple[str, bytes]
STREAM_READ_TIMEOUT = 60.0  # the server pings every 15 s; a silent minute is a dead connection
RECONNECT_ATTEMPTS = 8  # failed reconnects in a row before `follow` gives up (about 45 s)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the parser of its (successful) answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] | None = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, IO[bytes] | bytes, str]]] | None = None

    def request(self) -> dict[str, Any]:
        """Keyword arguments for `httpx.Client.request` / `AsyncClient.request`."""
        out = {"params": self.params, "json": self.json, "headers": self.headers,
               "data": self.data, "files": self.files}
        return {k: v for k, v in out.items() if v is not None}


def settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    """The base URL and auth headers, from the arguments or `LONGTASK_URL`/`LONGTASK_API_KEY`."""
    url = base_url or os.environ.get("LONGTASK_URL") or DEFAULT_URL
    key = api_key or os.environ.get("LONGTASK_API_KEY")
    if not key:
        raise ClientError("no API key: pass api_key= or set LONGTASK_API_KEY", code="no_api_key")
    return url.rstrip("/"), {"Authorization": f"Bearer {key}"}


def answer(response: httpx.Response, parse: Callable[[httpx.Response], T]) -> T:
    """The parsed answer, or the typed error for a 4xx/5xx."""
    if response.status_code >= 400:
        raise error_for(response)
    return parse(response)


def transport_error(exc: httpx.TransportError, url: str) -> ConnectionFailed:
    return ConnectionFailed(f"cannot reach {url}: {type(exc).__name__}: {exc}".rstrip(": "))


def _json(build: Callable[[Any], T]) -> Callable[[httpx.Response], T]:
    return lambda response: build(response.json())


def _path(task_id: str, suffix: str = "") -> str:
    return f"/tasks/{quote(str(task_id), safe='')}{suffix}"


def submit(kind: str, params: Any, idempotency_key: str | None,
           deadline_seconds: float | None) -> Call[models.Task]:
    body: dict[str, Any] = {"kind": kind, "params": params}
    if deadline_seconds is not None:
        body["deadline_seconds"] = deadline_seconds
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
    return Call("POST", "/tasks", _json(models.task), json=body, headers=headers)


def upload(items: Iterable[UploadItem], metadata: dict[str, Any] | None, reindex: bool,
           files: ExitStack) -> Call[models.Upload]:
    """Paths are opened into `files` (closed by the caller once sent), not read into memory."""
    parts: list[tuple[str, tuple[str, IO[bytes] | bytes, str]]] = []
    for item in items:
        if isinstance(item, tuple):
            name, content = item
            parts.append(("files", (name, content, "application/octet-stream")))
        else:
            path = Path(item)
            parts.append(("files", (path.name, files.enter_context(path.open("rb")),
                                    "application/pdf" if path.suffix.lower() == ".pdf"
                                    else "application/octet-stream")))
    data = {"reindex": "true" if reindex else "false"}
    if metadata is not None:
        data["metadata"] = json.dumps(metadata)
    return Call("POST", "/documents", _json(models.upload), data=data, files=parts)


def get(task_id: str) -> Call[models.Task]:
    return Call("GET", _path(task_id), _json(models.task))


def page(status: str | None, kind: str | None, limit: int | None,
         cursor: str | None) -> Call[models.TaskPage]:
    params = {"status": status, "kind": kind, "limit": limit, "cursor": cursor}
    return Call("GET", "/tasks", _json(models.task_page),
                params={k: v for k, v in params.items() if v is not None})


def cancel(task_id: str) -> Call[models.Task]:
    return Call("POST", _path(task_id, "/cancel"), _json(models.task))


def retry(task_id: str) -> Call[models.Task]:
    return Call("POST", _path(task_id, "/retry"), _json(models.task))


def delete(task_id: str) -> Call[None]:
    return Call("DELETE", _path(task_id), lambda response: None)


def search(q: str, k: int | None, document_id: str | None) -> Call[list[models.SearchHit]]:
    params = {"q": q, "k": k, "document_id": document_id}
    return Call("GET", "/search", _json(models.search_hits),
                params={k: v for k, v in params.items() if v is not None})


def stats() -> Call[models.Stats]:
    return Call("GET", "/stats", _json(models.stats))


def events_path(task_id: str) -> str:
    return _path(task_id, "/events")


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
        """The event to yield for `sse`, or None for pings, hints and repeats."""
        if sse.retry is not None:
            self.wait_hint = sse.retry / 1000
        if not sse.data or not sse.id:
            return None
        seq = int(sse.id)
        if seq <= self.last:
            return None
        if seq > self.last + 1:
            raise _Gap(f"event {seq} came after {self.last}")
        event = Event(seq, sse.event, json.loads(sse.data))
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
        delay = min(10.0, self.wait_hint * 2 ** (self.failures - 1))
        if isinstance(exc, Unavailable) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        delay *= 0.5 + self._rand.random() / 2
        left = remaining(when)
        return delay if left is None else min(delay, left)


class _Gap(Exception):
    pass


# what makes `follow` reconnect rather than raise, and what `wait` outlives by polling
RECONNECT = (httpx.TransportError, Unavailable, _Gap)
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
