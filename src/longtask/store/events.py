"""task_events: the durable, gap-free history of every task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from longtask.core.events import Event, parse_at
from longtask.core.status import ACTIVE_SQL, TERMINAL
from longtask.db import Db

# Takes the task's next sequence number and stores the event in one statement, so the two
# commit together; a task that has ended takes no more events (the UPDATE matches no row).
_APPEND = f"""
WITH t AS (
    UPDATE tasks SET last_seq = last_seq + 1, updated_at = now()
    WHERE id = $1 AND status IN {ACTIVE_SQL}
    RETURNING id, tenant, last_seq
)
INSERT INTO task_events (task_id, seq, tenant, type, data)
SELECT id, last_seq, tenant, $2, $3 FROM t
RETURNING task_id, seq, type, data, created_at
"""


async def append(conn: Db, task_id: str, type_: str,
                 data: dict[str, Any]) -> Event | None:
    """Store an event; None if the task has ended (or is gone)."""
    row = await conn.fetchrow(_APPEND, task_id, type_, data)
    return _event(row) if row else None


# A stream's catch-up in one round trip: the task's state, a page of its events after a sequence
# number, and the text so far of its items that are writing some.
_CATCH_UP = """
SELECT t.status, t.last_seq,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('seq', e.seq, 'type', e.type, 'data', e.data,
                                                  'at', e.created_at) ORDER BY e.seq), '[]')
     FROM (SELECT seq, type, data, created_at FROM task_events WHERE task_id = t.id AND seq > $3
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
        events=[stored_event(task_id, e) for e in row["events"]],
        streams=dict(sorted((int(index), text) for index, text in row["streams"].items())),
    )


def stored_event(task_id: str, raw: dict[str, Any]) -> Event:
    """An event as a JSON object built in SQL ({seq, type, data, at}) reads back."""
    return Event(task_id, raw["seq"], raw["type"], raw["data"], parse_at(raw["at"]))


def _event(row: asyncpg.Record) -> Event:
    return Event(str(row["task_id"]), row["seq"], row["type"], row["data"], row["created_at"])
