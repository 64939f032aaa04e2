"""task_events: the durable, gap-free history of every task."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

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


async def after(pool: asyncpg.Pool, tenant: str, task_id: str, seq: int,
                limit: int = 1000) -> list[Event]:
    """Events of a task with a sequence number above `seq`, in order."""
    rows = await pool.fetch(
        "SELECT task_id, seq, type, data, created_at FROM task_events"
        " WHERE task_id = $1 AND tenant = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        task_id, tenant, seq, limit,
    )
    return [_event(r) for r in rows]


def _event(row: asyncpg.Record) -> Event:
    return Event(str(row["task_id"]), row["seq"], row["type"], row["data"], row["created_at"])
