"""Replay, then tail: every event of a task after a point, from Postgres and then live."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import asyncpg

from longtask.broker.hub import RESYNC, Hub
from longtask.core.errors import NotFound
from longtask.core.events import DELTA, TEXT, Event, now
from longtask.store import events as event_store

_PAGE = 500  # events read from Postgres at a time while replaying


async def replay_then_tail(pool: asyncpg.Pool, hub: Hub, tenant: str, task_id: str,
                           after: int) -> AsyncGenerator[list[Event], None]:
    """Every event of a task above `after`, in order, no gaps, no repeats, ending with the
    task's final event: the history from Postgres, then the live feed. In batches (a page of
    history, the live events that queued up meanwhile), so a consumer can write each in one go.

    The first batch comes as soon as the task has been read, even when it is empty, so a caller
    can answer before anything happens: NotFound if there is no such task, and no batch at all
    (the generator ends) if the task has ended and every event up to `after` was seen already.
    A task deleted later simply ends the feed.

    Subscribe first, then read the history, then pass on live events above the last one
    replayed: reading first would lose what is published in between. Sequence numbers are
    consecutive per task, so a gap in the live feed (or an overflow, or a Redis reconnect) is
    seen at once and filled from Postgres. The SSE stream and the WebSocket both consume this.

    Live LLM text (`delta`, never stored, seq 0) is passed on as well: after the history, the
    text so far of each item that is writing some (a `text` event), then only the part of each
    delta past what this client has (by offset); a delta that skips text means some was lost,
    and the text so far is read again from Postgres.

    Every event passed on has its time (`at`): a stored one the time it was stored, live text
    the time it was made (a `text` event: now). A stored event that comes live without one was
    published by a worker of the release before (during a deploy): it is read from Postgres
    instead, which has the time.
    """
    last = after
    shown: dict[int, tuple[int, int]] = {}  # item -> (step, characters) of live text sent
    first = True
    async with hub.subscribe(task_id) as live:
        while True:
            # the task, a page of its history and its items' text so far: one round trip
            page = await event_store.catch_up(pool, tenant, task_id, last, _PAGE)
            if page is None:
                if first:
                    raise NotFound(f"no task {task_id}")
                return
            backlog = page.events
            end = next((n for n, event in enumerate(backlog, 1) if event.terminal), None)
            batch = backlog[:end]
            if backlog:
                last = backlog[-1].seq
            more = end is None and len(backlog) == _PAGE
            if end is None and not more:
                batch += _texts(task_id, page.streams, shown)
            if page.ended and not backlog:
                return  # its final event was seen already
            if batch or first:
                yield batch
            first = False
            if end is not None:
                return
            if more:
                continue
            resync = False
            while not resync:
                batch = []
                for item in await live.take():
                    if item == RESYNC:
                        resync = True
                        break
                    assert isinstance(item, Event)
                    if item.type == DELTA:
                        piece = _unseen(item.data, shown)
                        if piece is None:
                            resync = True  # text was missed: read the text so far again
                            break
                        if piece:
                            batch.append(Event(task_id, 0, DELTA, piece, item.at or now()))
                        continue
                    if item.seq <= last:
                        continue
                    if item.seq > last + 1 or item.at is None:
                        # a gap: the missing events are committed, read them; or an event
                        # without its time: Postgres has it
                        resync = True
                        break
                    batch.append(item)
                    last = item.seq
                    if item.terminal:
                        yield batch
                        return
                if batch:
                    yield batch


def _texts(task_id: str, streams: dict[int, dict[str, Any]],
           shown: dict[int, tuple[int, int]]) -> list[Event]:
    """A `text` event for each item whose text so far the client does not have yet."""
    texts = []
    for index, stream in streams.items():
        if shown.get(index) != (stream["step"], len(stream["text"])):
            shown[index] = (stream["step"], len(stream["text"]))
            texts.append(Event(task_id, 0, TEXT, {"item": index, **stream}, now()))
    return texts


def _unseen(data: dict[str, Any], shown: dict[int, tuple[int, int]]) -> dict[str, Any] | None:
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
