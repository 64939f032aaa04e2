"""A WebSocket client for the tests (`websockets`), against the real uvicorn."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import event_time


@dataclass
class Socket:
    """What a WebSocket client saw: events as (id, event, data) and the time of each (its `at`),
    the other messages, the close."""

    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)
    code: int | None = None
    reason: str = ""

    def add(self, message: dict[str, Any]) -> None:
        """An event message: {"id", "event", "data", "at"}, its data exactly as stored."""
        assert set(message) == {"id", "event", "data", "at"}, message
        assert "at" not in message["data"], message
        self.events.append((message["id"], message["event"], message["data"]))
        self.times.append(event_time(message["at"]))


def ws_url(web_url: str, task_id: str, **query: str) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"ws{web_url.removeprefix('http')}/tasks/{task_id}/ws" + (f"?{params}" if params else "")


async def read_until_closed(ws: ClientConnection, seen: Socket, timeout: float = 30) -> Socket:
    async with asyncio.timeout(timeout):
        while True:
            try:
                message = json.loads(await ws.recv())
            except ConnectionClosed as closed:
                seen.code = closed.rcvd.code if closed.rcvd else None
                seen.reason = closed.rcvd.reason if closed.rcvd else ""
                return seen
            if "event" in message:
                seen.add(message)
            else:
                seen.others.append(message)


async def socket_events(url: str, headers: dict[str, str], first: dict[str, Any] | None = None,
                        timeout: float = 30) -> Socket:
    async with connect(url, additional_headers=headers) as ws:
        if first is not None:
            await ws.send(json.dumps(first))
        return await read_until_closed(ws, Socket(), timeout)
