"""GET /tasks/{id}/ws: a task's events over a WebSocket, and cancel from the same socket.

The same events as the SSE stream, from the same replay-then-tail feed
(`events.replay_then_tail`), each a JSON text message
`{"id": seq, "event": type, "data": {...}, "at": "2026-11-30T16:04:05.123456Z"}` (`at`: when it was
stored, UTC; `data` exactly as stored), with `{"type": "ping"}` every LONGTASK_SSE_PING_SECONDS.
The client may send:

    {"after": N}          first message only, when the URL has no ?after= (or Last-Event-ID):
                          replay from there; any other first message means "from the start"
    {"action": "ping"}    answered {"type": "pong"}
    {"action": "cancel"}  cancels the task (as POST /tasks/{id}/cancel), answered
                          {"type": "canceled", "task": {...}} or {"type": "error", ...}

Without ?after= the server sends no event until that first message, so a client that resumes
never gets an event twice; pings go out from the moment the socket is accepted all the same.
A socket holds one of its tenant's LONGTASK_MAX_STREAMS places while it is open, and its connect
counts against LONGTASK_STREAM_RATE (not the request rate; a cancel sent over it does). Close
codes say why: 1000 the task ended and every event was sent; 4400 a bad request; 4401
unauthorised; 4404 no such task (another tenant's too); 4429 over the stream limit or rate
(reconnect after the error message's `retry_after` seconds); 1013 Postgres or Redis is away (try
again later); 1012 the server is restarting (uvicorn sends it on shutdown). Authentication runs before the handshake is accepted, so nothing about a
task goes out unless it passes; a refused socket is accepted only to carry its close code (and an
`{"type": "error", ...}` message), which a browser could not see in a rejected handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from contextlib import aclosing
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from longtask.core.errors import DomainError, Invalid
from longtask.service import tasks as tasks_service
from longtask.service.outages import DEPENDENCY_ERRORS
from longtask.service.streams import replay_then_tail
from longtask.store import tasks as task_store
from longtask.web.common import authenticate_stream, open_stream, task_id
from longtask.web.errors import status_of
from longtask.web.routes.stream import MAX_SEQ, resume_point
from longtask.web.routes.tasks import task_body

log = logging.getLogger(__name__)

ENDED = 1000  # the task's final event was sent
RESTARTING = 1012  # uvicorn's own code when the server shuts down
TRY_LATER = 1013  # a backing service is away
_DISCONNECTED = (WebSocketDisconnect, OSError, RuntimeError)  # a send on a socket that is gone


async def socket(websocket: WebSocket) -> None:
    """Authenticate, take a stream lease, accept, replay from `after`, then relay live events
    until the task ends; pings from the moment the socket is accepted."""
    try:
        ident = task_id(websocket)
        tenant = await authenticate_stream(websocket, ident)
        lease = await open_stream(websocket, tenant)
    except DomainError as exc:
        return await _refuse(websocket, 4000 + status_of(exc), exc.code, exc.detail,
                             exc.retry_after)
    except DEPENDENCY_ERRORS:
        return await _refuse(websocket, TRY_LATER, "unavailable", "Postgres or Redis is away")
    try:
        await _serve(websocket, tenant, ident)
    finally:
        lease.close()


async def _serve(websocket: WebSocket, tenant: str, ident: str) -> None:
    state = websocket.state
    try:
        task = await task_store.get(state.pool, tenant, ident)
        resumed = "after" in websocket.query_params or "last-event-id" in websocket.headers
        after = resume_point(websocket) if resumed else None
    except DomainError as exc:
        return await _refuse(websocket, 4000 + status_of(exc), exc.code, exc.detail)
    except DEPENDENCY_ERRORS:
        return await _refuse(websocket, TRY_LATER, "unavailable", "Postgres or Redis is away")
    await websocket.accept()
    session = _Session(websocket, state, tenant, ident)
    # from now on, also while waiting for the first message: proxies drop quiet connections
    heartbeat = asyncio.create_task(session.heartbeat())
    try:
        if after is None:
            first = await session.receive()
            if first is None:
                return
            try:
                after = _after(first)
            except Invalid as exc:
                return await session.close(4400, exc.code, exc.detail)
            if "after" not in first:
                await session.handle(first)
        if task.terminal and after >= task.last_seq:
            return await session.close(ENDED, "task ended")
        await session.run(after, heartbeat)
    finally:
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)


class _Session:
    """One open socket: a relay, a heartbeat and a listener, and one lock for sending."""

    def __init__(self, websocket: WebSocket, state: Any, tenant: str, ident: str) -> None:
        self.websocket, self.state, self.tenant, self.ident = websocket, state, tenant, ident
        self._sending = asyncio.Lock()
        self._handling: asyncio.Task[None] | None = None  # a client action being answered

    async def run(self, after: int, heartbeat: asyncio.Task[None]) -> None:
        relay = asyncio.create_task(self._relay(after))
        others = {heartbeat, asyncio.create_task(self._listen())}
        try:
            await asyncio.wait({relay, *others}, return_when=asyncio.FIRST_COMPLETED)
            if relay.done() and self._handling is not None:
                # a cancel ends the relay before its own answer is out: let the answer go
                await asyncio.wait({self._handling}, timeout=5)
        finally:
            jobs = [relay, *others] + ([self._handling] if self._handling else [])
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
        if not relay.done() or relay.cancelled():
            return  # the client went away (or the server is closing it)
        error = relay.exception()
        if isinstance(error, WebSocketDisconnect):
            return
        if error is None:
            await self.close(ENDED, "task ended")
        elif isinstance(error, DomainError):  # NotFound: the task was deleted as the socket opened
            await self.close(4000 + status_of(error), error.code, error.detail)
        elif isinstance(error, DEPENDENCY_ERRORS):
            log.warning("socket for task %s: a backing service is away: %r", self.ident, error)
            await self.close(TRY_LATER, "unavailable", "Postgres or Redis is away; reconnect")
        else:
            log.error("socket for task %s failed", self.ident, exc_info=error)
            await self.close(1011, "internal_error", "an unexpected error; it has been logged")

    async def send(self, message: dict[str, Any]) -> None:
        async with self._sending:
            await self.websocket.send_text(json.dumps(message, separators=(",", ":")))

    async def receive(self) -> dict[str, Any] | None:
        """The next client message as an object (a malformed one is answered, then skipped);
        None once the client has gone."""
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            try:
                value = json.loads(message.get("text") or message.get("bytes") or b"")
            except (ValueError, RecursionError):
                value = None
            if isinstance(value, dict):
                return value
            await self.send({"type": "error", "error": "invalid_message",
                             "detail": 'send a JSON object, e.g. {"action": "ping"}'})

    async def handle(self, message: dict[str, Any]) -> None:
        action = message.get("action")
        if action == "ping":
            return await self.send({"type": "pong"})
        if action != "cancel":
            return await self.send({"type": "error", "error": "invalid_action",
                                    "detail": '`action` must be "ping" or "cancel"'})
        try:
            await self.state.admission.request(self.tenant)
            task = await tasks_service.cancel(self.state.deps, self.tenant, self.ident)
        except DomainError as exc:
            return await self.send({"type": "error", "error": exc.code, "detail": exc.detail})
        except DEPENDENCY_ERRORS:
            return await self.send({"type": "error", "error": "unavailable",
                                    "detail": "Postgres or Redis is away; try again"})
        await self.send({"type": "canceled", "task": task_body(task)})

    async def close(self, code: int, reason: str, detail: Any = None,
                    retry_after: float | None = None) -> None:
        with contextlib.suppress(*_DISCONNECTED):
            if detail is not None:
                message = {"type": "error", "error": reason, "detail": detail}
                if retry_after is not None:
                    message["retry_after"] = max(1, math.ceil(retry_after))
                await self.send(message)
            await self.websocket.close(code, reason[:120])

    async def _relay(self, after: int) -> None:
        feed = replay_then_tail(self.state.pool, self.state.hub, self.tenant, self.ident, after)
        async with aclosing(feed):
            async for batch in feed:
                for event in batch:
                    await self.send({"id": event.seq or None, "event": event.type,
                                     "data": event.data, "at": event.at_text})  # live text: no id

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.sse_ping_seconds)
            await self.send({"type": "ping"})

    async def _listen(self) -> None:
        while (message := await self.receive()) is not None:
            self._handling = asyncio.create_task(self.handle(message))
            await asyncio.shield(self._handling)


def _after(message: dict[str, Any]) -> int:
    value = message.get("after", 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEQ:
        raise Invalid(f"`after` must be a sequence number from 0 to {MAX_SEQ}",
                      code="invalid_after")
    return value


async def _refuse(websocket: WebSocket, code: int, reason: str, detail: Any,
                  retry_after: float | None = None) -> None:
    await websocket.accept()
    await _Session(websocket, websocket.state, "", "").close(code, reason, detail, retry_after)


routes = [WebSocketRoute("/tasks/{id}/ws", socket)]
