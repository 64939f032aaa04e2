"""The synchronous client, `Client` (see `longtask.client`)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, suppress
from typing import Any, TypeVar

import httpx
from httpx_sse import connect_sse

from longtask.client import calls
from longtask.client import follow as streams
from longtask.client.aio import AsyncClient
from longtask.client.calls import Call, UploadItem
from longtask.client.errors import ClientError
from longtask.client.follow import Cursor
from longtask.client.models import Event, SearchHit, Stats, Task, TaskPage, Upload

__all__ = ["AsyncClient", "Client", "ClientError", "Event", "SearchHit", "Stats", "Task",
           "TaskPage", "Upload"]
T = TypeVar("T")


class Client:
    """A blocking client. `base_url` and `api_key` default to `LONGTASK_URL` and
    `LONGTASK_API_KEY`; `timeout` bounds each request (not `wait` or `follow`); `transport`
    is handed to httpx (e.g. `httpx.HTTPTransport(retries=3)`)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url, headers = calls.settings(base_url, api_key)
        self._timeout = httpx.Timeout(timeout)
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=self._timeout,
                                  transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(self, kind: str, params: Any = None, *, idempotency_key: str | None = None,
               deadline_seconds: float | None = None) -> Task:
        """Submit a task; returns at once with it (`pending`). A repeated `idempotency_key`
        returns the task the first request made."""
        return self._send(calls.submit(kind, {} if params is None else params, idempotency_key,
                                       deadline_seconds))

    def upload(self, items: Iterable[UploadItem], *, metadata: dict[str, Any] | None = None,
               reindex: bool = False) -> Upload:
        """Upload files (paths, or `(name, bytes)` pairs) as one ingest task."""
        with ExitStack() as files:
            return self._send(calls.upload(items, metadata, reindex, files))

    def get(self, task_id: str) -> Task:
        """The task, with its items."""
        return self._send(calls.get(task_id))

    def list(self, *, status: str | None = None, kind: str | None = None,
             limit: int | None = None, cursor: str | None = None) -> TaskPage:
        """One page of tasks, newest first; `cursor` is a page's `next_cursor`."""
        return self._send(calls.page(status, kind, limit, cursor))

    def iter_tasks(self, *, status: str | None = None, kind: str | None = None,
                   page_size: int = 100) -> Iterator[Task]:
        """Every matching task, newest first, fetched a page at a time."""
        cursor: str | None = None
        while True:
            page = self.list(status=status, kind=kind, limit=page_size, cursor=cursor)
            yield from page.tasks
            if not (cursor := page.next_cursor):
                return

    def cancel(self, task_id: str) -> Task:
        """Cancel a task; `Conflict` if it has ended already."""
        return self._send(calls.cancel(task_id))

    def retry(self, task_id: str) -> Task:
        """Run an ended task's failed items again, as a new task; `Conflict` if none failed."""
        return self._send(calls.retry(task_id))

    def delete(self, task_id: str) -> None:
        """Delete an ended task; `Conflict` while it runs."""
        self._send(calls.delete(task_id))

    def search(self, q: str, *, k: int | None = None, document_id: str | None = None,
               mode: str | None = None) -> builtins.list[SearchHit]:
        """The `k` chunks that best answer the query, best first; `mode`: `hybrid` (the
        server's default: words and meaning fused), `text` (words) or `vector` (meaning)."""
        return self._send(calls.search(q, k, document_id, mode))

    def stats(self) -> Stats:
        """The tenant's tasks by status and kind, the queue depth, the workers alive."""
        return self._send(calls.stats())

    def follow(self, task_id: str, after: int = 0) -> Iterator[Event]:
        """The task's events after sequence number `after`, live, until its final status.

        A dropped connection is reopened with `Last-Event-ID` (with backoff), so every event
        comes exactly once and in order; `ConnectionFailed` after repeated failures."""
        return self._follow(task_id, Cursor(task_id, after), None)

    def wait(self, task_id: str, timeout: float | None = None) -> Task:
        """The task once it has ended; follows its events, or polls if the stream fails.
        `WaitTimeout` after `timeout` seconds."""
        poll = streams.Poll(task_id, timeout)
        first = self.get(task_id)
        if first.terminal:
            return first
        with suppress(*streams.POLL_THROUGH):
            for _ in self._follow(task_id, Cursor(task_id, first.last_seq), poll.when):
                pass
        while (task := poll.result(self._poll_once(task_id))) is None:
            time.sleep(poll.pause())
        return task

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.path, **call.request())
        except httpx.TransportError as exc:
            raise calls.transport_error(exc, self.base_url) from exc
        return calls.answer(response, call.parse)

    def _poll_once(self, task_id: str) -> Task | ClientError:
        try:
            return self.get(task_id)
        except ClientError as exc:
            return exc

    def _follow(self, task_id: str, cursor: Cursor, when: float | None) -> Iterator[Event]:
        while not cursor.done:
            failure: Exception | None = None
            try:
                with connect_sse(self._http, "GET", calls.events_path(task_id),
                                 headers=cursor.headers(),
                                 timeout=streams.stream_timeout(self._timeout, when)) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                    if not streams.opened(source.response):
                        return
                    if when is not None:
                        source.response.stream = _Deadline(source.response.stream, cursor, when)
                    for sse in source.iter_sse():
                        if (event := cursor.accept(sse)) is not None:
                            yield event
                        if cursor.done:
                            return
            except streams.RECONNECT as exc:
                failure = exc
            time.sleep(cursor.backoff(failure, when))


class _Deadline(httpx.SyncByteStream):
    """A response body that raises `WaitTimeout` once `when` has passed. A read timeout alone
    cannot end a wait: the server's keep-alive pings restart it."""

    def __init__(self, stream: Any, cursor: Cursor, when: float) -> None:
        self._stream, self._cursor, self._when = stream, cursor, when

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if timeout := streams.expired(self._cursor.task_id, self._when):
                raise timeout
            yield chunk

    def close(self) -> None:
        self._stream.close()
