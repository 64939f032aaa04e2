"""Live LLM text on a task's event stream: deltas coalesced to one event per ~50 ms.

Deltas are ephemeral: they go out on the task's channel (type `delta`, no sequence number) and
are not rows in task_events. What makes them safe to drop is the durable copy: before each
delta is published, the whole text so far is saved on the item (`task_items.stream`), so a
client that joins late or reconnects first gets that text (a `text` event), then the live
deltas, each carrying the `offset` at which it starts: no text is missing or shown twice.

    stream = ctx.text_stream(step=2)
    await chat.complete(messages, on_delta=stream.write, on_restart=stream.restart)
    await stream.close()
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from longtask.core.events import DELTA, Event, now
from longtask.store import items as item_store

if TYPE_CHECKING:
    from longtask.worker.context import RunContext

COALESCE_SECONDS = 0.05


class TextStream:
    """The text one LLM call of an item writes, relayed as it comes."""

    def __init__(self, ctx: RunContext, step: int) -> None:
        self._ctx = ctx
        self.step = step
        self.text = ""  # what has been published
        self._pending = ""
        self._flushed_at = 0.0

    async def write(self, delta: str) -> None:
        self._pending += delta
        if time.monotonic() - self._flushed_at >= COALESCE_SECONDS:
            await self.flush()

    async def restart(self) -> None:
        """The call is being retried from the start: what was shown goes away."""
        self._pending = ""
        self.text = ""
        await self._send("", offset=0, reset=True)

    async def flush(self) -> None:
        if not self._pending:
            return
        piece, self._pending = self._pending, ""
        offset = len(self.text)
        self.text += piece
        await self._send(piece, offset=offset)

    async def close(self) -> None:
        """Send what is left, then drop the live copy: from here on the item's durable events
        carry the text (the caller emits one with it)."""
        await self.flush()
        await item_store.save_stream(self._ctx.pool, self._ctx.item_id, self._ctx.worker_id, None)

    async def _send(self, piece: str, *, offset: int, reset: bool = False) -> None:
        ctx = self._ctx
        self._flushed_at = time.monotonic()
        saved = await item_store.save_stream(ctx.pool, ctx.item_id, ctx.worker_id,
                                             {"step": self.step, "text": self.text})
        if not saved:
            ctx.cancel("lease_lost")
            ctx.raise_if_canceled()
        data = {"item": ctx.index, "step": self.step, "offset": offset, "text": piece}
        if reset:
            data["reset"] = True
        ctx.outbox.send([Event(ctx.task_id, 0, DELTA, data, now())])
