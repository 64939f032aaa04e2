"""Events: what a task's stream carries, in order, each with its per-task sequence number."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from longtask.core.status import TERMINAL

T = TypeVar("T")

# ephemeral event types (never rows in task_events): live LLM text, and the whole text so far
# of an item
DELTA = "delta"
TEXT = "text"


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
