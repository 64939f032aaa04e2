"""GET /tasks/{id}/events: Server-Sent Events, replayed from Postgres, then tailed live.

The replay-then-tail logic (subscribe first, then read the history, then the live feed, with gaps
filled from Postgres) is `events.replay_then_tail`, shared with the WebSocket. `id:` is the
sequence number, so a browser's automatic reconnect (Last-Event-ID) resumes exactly where it
stopped. The stream ends after the task's final event.

Each open stream holds one of its tenant's LONGTASK_MAX_STREAMS places (`broker.streams`), and
its connect counts against LONGTASK_STREAM_RATE, not against the request rate. Over either, a
plain client gets 429 with `Retry-After`; a request that accepts `text/event-stream` (a browser's
EventSource, which never retries a non-200) gets a 200 that tells it when to come back
(`errors.come_back_later`).

SSE has no field for an event's time, so it goes in `data`: each event's data is the JSON object
the job or the server made, plus `"at"`, the time it was stored (live text: made) in UTC, e.g.
"2026-11-30T16:04:05.123456Z". A job cannot emit a key `at` of its own (`ctx.emit` and
`ctx.progress` refuse it); an event stored before that rule with one has it replaced here, and a
warning is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route

from longtask.broker.streams import Lease
from longtask.core.errors import Invalid, LimitReached
from longtask.core.events import AT, Event
from longtask.service.streams import replay_then_tail
from longtask.web.common import authenticate_stream, open_stream, task_id
from longtask.web.errors import come_back_later

log = logging.getLogger(__name__)

RECONNECT_MS = 1000  # the `retry:` hint: how soon a browser comes back after a drop or restart
MAX_SEQ = 2**63 - 1  # task_events.seq is a bigint
_HELLO = ServerSentEvent(comment="longtask", retry=RECONNECT_MS).encode()


async def events(request: Request) -> Response:
    ident = task_id(request)
    tenant = await authenticate_stream(request, ident)
    after = resume_point(request)
    try:
        lease = await open_stream(request, tenant)
    except LimitReached as exc:
        # 429 for a plain client; an EventSource would give up for good on it
        if "text/event-stream" in request.headers.get("accept", ""):
            return come_back_later(exc)
        raise
    state = request.state
    try:
        feed = replay_then_tail(state.pool, state.hub, tenant, ident, after)
        first = await anext(feed)  # the task read (NotFound: 404) and its history so far
    except StopAsyncIteration:
        # the task has ended and the client has every event: nothing more will ever come, and
        # 204 tells an EventSource to stop reconnecting
        lease.close()
        return Response(status_code=204)
    except BaseException:
        lease.close()
        raise
    return EventSourceResponse(
        _relay(first, feed, lease),
        ping=state.settings.sse_ping_seconds,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        send_timeout=30,
        background=BackgroundTask(_close, lease),  # a HEAD request never starts the body
    )


async def _close(lease: Lease) -> None:
    lease.close()  # on the event loop: a plain function would run in a thread


async def _relay(first: list[Event], feed: AsyncGenerator[list[Event], None], lease: Lease
                 ) -> AsyncIterator[bytes]:
    # one write per batch (a page of history is hundreds of events): sse-starlette sends bytes
    # as they are, framed here by its own ServerSentEvent.encode
    try:
        async with aclosing(feed):
            yield _HELLO + _frames(first)
            async for batch in feed:
                yield _frames(batch)
    finally:
        lease.close()  # at once, also when the client went away and this was cancelled


def _frames(batch: list[Event]) -> bytes:
    return b"".join(event.encoded("sse", _frame) for event in batch)


def _frame(event: Event) -> bytes:
    if AT in event.data:
        log.warning("task %s event %s: its data's own `at` (%r) is replaced by the time it was "
                    "stored", event.task_id, event.seq, event.data[AT])
    data = {**event.data, AT: event.at_text}
    # live text (seq 0) has no `id:`, so a browser's Last-Event-ID stays at the stored event
    return ServerSentEvent(data=json.dumps(data, separators=(",", ":")), event=event.type,
                           id=str(event.seq) if event.seq else None).encode()


def resume_point(request: HTTPConnection) -> int:
    """Where a stream resumes: after the `Last-Event-ID` header, or `?after=`, or 0."""
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    try:
        value = int(raw)
    except ValueError:
        raise Invalid("Last-Event-ID / `after` must be a sequence number",
                      code="invalid_query") from None
    if not 0 <= value <= MAX_SEQ:
        raise Invalid(f"Last-Event-ID / `after` must be from 0 to {MAX_SEQ}",
                      code="invalid_query")
    return value


routes = [Route("/tasks/{id}/events", events, methods=["GET"])]
