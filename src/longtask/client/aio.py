"""`AsyncClient`: the asyncio twin of `longtask.client.Client` (same arguments, same methods).

Requests and answers are built and read by `client_http`; only sending and waiting live here.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Iterable
from contextlib import ExitStack, suppress
from typing import Any, TypeVar

import httpx
from httpx_sse import aconnect_sse

from longtask.client import calls
from longtask.client import follow as streams
from longtask.client.calls import Call, UploadItem
from longtask.client.errors import ClientError, WaitTimeout
from longtask.client.follow import Cursor
from longtask.client.models import Event, SearchHit, Stats, Task, TaskPage, Upload

T = TypeVar("T")


class AsyncClient:
    """A non-blocking client; see `longtask.client.Client` for what each method does."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url, headers = calls.settings(base_url, api_key)
        self._timeout = httpx.Timeout(timeout)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers,
                                       timeout=self._timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(self, kind: str, params: Any = None, *, idempotency_key: str | None = None,
                     deadline_seconds: float | None = None) -> Task:
        return await self._send(calls.submit(kind, {} if params is None else params,
                                             idempotency_key, deadline_seconds))

    async def upload(self, items: Iterable[UploadItem], *,
                     metadata: dict[str, Any] | None = None, reindex: bool = False) -> Upload:
        with ExitStack() as files:
            return await self._send(calls.upload(items, metadata, reindex, files))

    async def get(self, task_id: str) -> Task:
        return await self._send(calls.get(task_id))

    async def list(self, *, status: str | None = None, kind: str | None = None,
                   limit: int | None = None, cursor: str | None = None) -> TaskPage:
        return await self._send(calls.page(status, kind, limit, cursor))

    async def iter_tasks(self, *, status: str | None = None, kind: str | None = None,
                         page_size: int = 100) -> AsyncIterator[Task]:
        cursor: str | None = None
        while True:
            page = await self.list(status=status, kind=kind, limit=page_size, cursor=cursor)
            for task in page.tasks:
                yield task
            if not (cursor := page.next_cursor):
                return

    async def cancel(self, task_id: str) -> Task:
        return await self._send(calls.cancel(task_id))

    async def retry(self, task_id: str) -> Task:
        return await self._send(calls.retry(task_id))

    async def delete(self, task_id: str) -> None:
        await self._send(calls.delete(task_id))

    async def search(self, q: str, *, k: int | None = None, document_id: str | None = None,
                     mode: str | None = None) -> builtins.list[SearchHit]:
        return await self._send(calls.search(q, k, document_id, mode))

    async def stats(self) -> Stats:
        return await self._send(calls.stats())

    def follow(self, task_id: str, after: int = 0) -> AsyncIterator[Event]:
        """`async for event in client.follow(id)`: see `Client.follow`."""
        return self._follow(task_id, Cursor(task_id, after))

    async def wait(self, task_id: str, timeout: float | None = None) -> Task:
        try:
            async with asyncio.timeout(timeout):
                return await self._wait(task_id)
        except TimeoutError:
            raise WaitTimeout(f"task {task_id} did not end within {timeout} s") from None

    async def _wait(self, task_id: str) -> Task:
        poll = streams.Poll(task_id, None)  # the deadline is the caller's asyncio.timeout
        first = await self.get(task_id)
        if first.terminal:
            return first
        with suppress(*streams.POLL_THROUGH):
            async for _ in self._follow(task_id, Cursor(task_id, first.last_seq)):
                pass
        while (task := poll.result(await self._poll_once(task_id))) is None:
            await asyncio.sleep(poll.pause())
        return task

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, **call.request())
        except httpx.TransportError as exc:
            raise calls.transport_error(exc, self.base_url) from exc
        return calls.answer(response, call.parse)

    async def _poll_once(self, task_id: str) -> Task | ClientError:
        try:
            return await self.get(task_id)
        except ClientError as exc:
            return exc

    async def _follow(self, task_id: str, cursor: Cursor) -> AsyncIterator[Event]:
        while not cursor.done:
            failure: Exception | None = None
            try:
                async with aconnect_sse(self._http, "GET", calls.events_path(task_id),
                                        headers=cursor.headers(),
                                        timeout=streams.stream_timeout(self._timeout, None)) as src:
                    if src.response.status_code >= 400:
                        await src.response.aread()
                    if not streams.opened(src.response):
                        return
                    async for sse in src.aiter_sse():
                        if (event := cursor.accept(sse)) is not None:
                            yield event
                        if cursor.done:
                            return
            except streams.RECONNECT as exc:
                failure = exc
            await asyncio.sleep(cursor.backoff(failure))
