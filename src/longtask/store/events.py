"""task_events: the durable, gap-free history of every task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")

TERMINAL = frozenset({"completed", "failed", "canceled"})
# ephemeral event types (never rows here): live LLM text, and the whole text so far of an item
DELTA = "delta"
TEXT = "text"

# Takes the task's next sequence number and stores the event in one statement, so the two
# commit together; a task that has ended takes no more events (the UPDATE matches no row).
_APPEND = """
WITH t AS (
    UPDATE tasks SET last_seq = last_seq + 1, updated_at = now()
    WHERE id = $1 AND status IN ('pending', 'running')
    RETURNING id, tenant, last_seq
)
INSERT INTO task_events (task_id, seq, tenant, type, data)
SELECT id, last_seq, tenant, $2, $3 FROM t
RETURNING task_id, seq, type, data, created_at
"""


@dataclass(frozen=True)
class Event:
    task_id: str
    seq: int
    type: str
    data: dict[str, Any]
    created_at: datetime | None = None
    # encodings made for the wire, kept with the event: the hub hands one Event to every
    # stream watching its task, so each encoding is made once, not once per stream
    _wire: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def encoded(self, form: str, encode: Callable[[Event], T]) -> T:
        """`encode(self)`, made the first time `form` is asked for."""
        if form not in self._wire:
            self._wire[form] = encode(self)
        return self._wire[form]  # type: ignore[no-any-return]

    @property
    def terminal(self) -> bool:
        """The task's last event: after it the stream closes."""
        return self.type == "status" and self.data.get("status") in TERMINAL

    def as_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "seq": self.seq, "type": self.type, "data": self.data}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        return cls(str(raw["task_id"]), int(raw["seq"]), str(raw["type"]), dict(raw["data"]))


async def append(conn: asyncpg.Connection | asyncpg.Pool, task_id: str, type_: str,
                 data: dict[str, Any]) -> Event | None:
    """Store an event; None if the task has ended (or is gone)."""
    row = await conn.fetchrow(_APPEND, task_id, type_, data)
    return _event(row) if row else None


async def insert_at(conn: asyncpg.Connection, task_id: str, tenant: str, seq: int, type_: str,
                    data: dict[str, Any]) -> Event:
    """Store an event whose sequence number the caller took with the task's own UPDATE."""
    row = await conn.fetchrow(
        "INSERT INTO task_events (task_id, seq, tenant, type, data) VALUES ($1, $2, $3, $4, $5)"
        " RETURNING task_id, seq, type, data, created_at",
        task_id, seq, tenant, type_, data,
    )
    return _event(row)


# A stream's catch-up in one round trip: the task's state, a page of its events after a sequence
# number, and the text so far of its items that are writing some.
_CATCH_UP = """
SELECT t.status, t.last_seq,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('seq', e.seq, 'type', e.type, 'data', e.data)
                               ORDER BY e.seq), '[]')
     FROM (SELECT seq, type, data FROM task_events WHERE task_id = t.id AND seq > $3
           ORDER BY seq LIMIT $4) e) AS events,
    (SELECT coalesce(jsonb_object_agg(idx, stream), '{}') FROM task_items
     WHERE task_id = t.id AND stream IS NOT NULL) AS streams
FROM tasks t WHERE t.id = $1 AND t.tenant = $2
"""


@dataclass(frozen=True)
class CatchUp:
    ended: bool  # the task has ended: no event will come after its newest one
    events: list[Event]  # in order, at most the page asked for
    streams: dict[int, dict[str, Any]]  # the streamed text so far, by item index


async def catch_up(pool: asyncpg.Pool, tenant: str, task_id: str, seq: int,
                   limit: int) -> CatchUp | None:
    """What a stream that has every event up to `seq` reads; None if there is no such task."""
    row = await pool.fetchrow(_CATCH_UP, task_id, tenant, seq, limit)
    if row is None:
        return None
    return CatchUp(
        ended=row["status"] in TERMINAL,
        events=[Event(task_id, e["seq"], e["type"], e["data"]) for e in row["events"]],
        streams=dict(sorted((int(index), text) for index, text in row["streams"].items())),
    )


def _event(row: asyncpg.Record) -> Event:
    return Event(str(row["task_id"]), row["seq"], row["type"], row["data"], row["created_at"])
