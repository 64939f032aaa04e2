"""Events: what a task's stream carries, in order, each with its per-task sequence number and
the time it was stored (`at`).

`at` goes on the wire in one form, everywhere (SSE, the WebSocket, Redis): ISO 8601 in UTC with
microseconds and a `Z`, e.g. "2026-11-30T16:04:05.123456Z" (always 27 characters, so strings sort
as times do). It is the event row's created_at, to the microsecond, so an event seen live and the
same event replayed from Postgres say the same time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from longtask.core.status import TERMINAL

T = TypeVar("T")

# ephemeral event types (never rows in task_events): live LLM text, and the whole text so far
# of an item
DELTA = "delta"
TEXT = "text"

# the key an SSE event's data carries `at` in (SSE has no other place): event data of a job's
# own may not use it
AT = "at"


@dataclass(frozen=True)
class Event:
    task_id: str
    seq: int
    type: str
    data: dict[str, Any]
    # when it was stored (live text: when it was made); None only for an event published by a
    # process of the release before this field (see service.streams)
    at: datetime | None
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

    @property
    def at_text(self) -> str | None:
        """`at` as the wire carries it (made once per event)."""
        return None if self.at is None else self.encoded("at", _at_text)

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON-able values (what goes through Redis); `from_dict` reads it back."""
        return {"task_id": self.task_id, "seq": self.seq, "type": self.type, "data": self.data,
                "at": self.at_text}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        at = raw.get("at")
        return cls(str(raw["task_id"]), int(raw["seq"]), str(raw["type"]), dict(raw["data"]),
                   parse_at(at) if at is not None else None)


def now() -> datetime:
    """The time for an event made now (live text), to the microsecond, in UTC."""
    return datetime.now(timezone.utc)


def format_at(at: datetime) -> str:
    """The wire form of an event's time: "2026-11-30T16:04:05.123456Z"."""
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_at(text: str) -> datetime:
    """An event's time, in UTC, from the wire form or from Postgres' JSON (any offset)."""
    at = datetime.fromisoformat(text)
    if at.tzinfo is None:
        raise ValueError(f"an event time without a timezone: {text!r}")
    return at.astimezone(timezone.utc)


def check_data(data: dict[str, Any]) -> None:
    """Refuse event data of a job's own with a key `at`: on SSE that key carries the event's
    time, and one would silently overwrite the other."""
    if AT in data:
        raise TypeError(f"event data may not have a key {AT!r}: every event carries the time it "
                        "was stored as `at`; give yours another name")


def _at_text(event: Event) -> str:
    assert event.at is not None
    return format_at(event.at)
