"""GET /tasks/{id}/events: Server-Sent Events, replayed from Postgres, then tailed live.

Subscribe first, then read the history, then pass on live events above the last one replayed:
reading first would lose what is published in between. Sequence numbers are consecutive per
task, so a gap in the live feed (or an overflow, or a Redis reconnect) is seen at once and filled
from Postgres. `id:` is the sequence number, so a browser's automatic reconnect (Last-Event-ID)
resumes exactly where it stopped. The stream ends after the task's final event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from longtask.api.common import authenticate_stream, task_id
from longtask.errors import InvalidInput
from longtask.events import RESYNC, Hub
from longtask.store import events as event_store
from longtask.store import items as item_store
from longtask.store import tasks as task_store
from longtask.store.events import DELTA, TEXT, Event

RECONNECT_MS = 1000  # the `retry:` hint: how soon a browser comes back after a drop or restart
_PAGE = 500
_MAX_SEQ = 2**63 - 1  # task_events.seq is a bigint


async def events(request: Request) -> Response:
    ident = task_id(request)
    tenant = await authenticate_stream(request, ident)
    state = request.state
    task = await task_store.get(state.pool, tenant, ident)
    after = _resume_point(request)
    if task.terminal and after >= task.last_seq:
        # nothing more will ever come; 204 tells an EventSource to stop reconnecting
        return Response(status_code=204)
    return EventSourceResponse(
        _relay(state.pool, state.hub, tenant, ident, after),
        ping=state.settings.sse_ping_seconds,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        send_timeout=30,
    )


async def _relay(pool: asyncpg.Pool, hub: Hub, tenant: str, ident: str,
                 after: int) -> AsyncIterator[ServerSentEvent]:
    last = after
    shown: dict[int, tuple[int, int]] = {}  # item -> (step, characters) of live text sent
    async with hub.subscribe(ident) as live:
        yield ServerSentEvent(comment="longtask", retry=RECONNECT_MS)
        while True:
            backlog = await event_store.after(pool, tenant, ident, last, _PAGE)
            for event in backlog:
                yield _sse(event)
                last = event.seq
                if event.terminal:
                    return
            if len(backlog) == _PAGE:
                continue
            for index, stream in (await item_store.streams(pool, tenant, ident)).items():
                if shown.get(index) != (stream["step"], len(stream["text"])):
                    shown[index] = (stream["step"], len(stream["text"]))
                    yield _live(TEXT, {"item": index, **stream})  # the text so far, whole
            while True:
                item = await live.get()
                if item == RESYNC:
                    break
                assert isinstance(item, Event)
                if item.type == DELTA:
                    piece = _piece(item.data, shown)
                    if piece is None:
                        break  # text was missed: read the text so far from Postgres
                    if piece:
                        yield _live(DELTA, piece)
                    continue
                if item.seq <= last:
                    continue
                if item.seq > last + 1:
                    break  # a gap: the missing events are committed; read them from Postgres
                yield _sse(item)
                last = item.seq
                if item.terminal:
                    return


def _piece(data: dict[str, Any], shown: dict[int, tuple[int, int]]) -> dict[str, Any] | None:
    """What of a live delta the client lacks: {} if it has it all, None if text is missing."""
    index, step, offset, text = data["item"], data["step"], data["offset"], data["text"]
    if data.get("reset"):
        shown[index] = (step, 0)
        return data
    seen_step, have = shown.get(index, (step, 0))
    if seen_step != step:
        have = 0  # the item's next LLM call
    if offset > have:
        return None
    if offset + len(text) <= have:
        return {}
    shown[index] = (step, offset + len(text))
    return {"item": index, "step": step, "offset": have, "text": text[have - offset:]}


def _live(type_: str, data: dict[str, Any]) -> ServerSentEvent:
    """An ephemeral event: no `id:`, so a browser's Last-Event-ID stays at the durable one."""
    return ServerSentEvent(data=json.dumps(data, separators=(",", ":")), event=type_)


def _sse(event: Event) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(event.data, separators=(",", ":")), event=event.type,
                           id=str(event.seq))


def _resume_point(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput("Last-Event-ID / `after` must be a sequence number",
                           code="invalid_query") from None
    if not 0 <= value <= _MAX_SEQ:
        raise InvalidInput(f"Last-Event-ID / `after` must be from 0 to {_MAX_SEQ}",
                           code="invalid_query")
    return value


routes = [Route("/tasks/{id}/events", events, methods=["GET"])]
