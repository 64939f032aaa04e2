"""The records the store returns and the service passes on: plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from longtask.core.events import Event
from longtask.core.status import TERMINAL, Status


@dataclass(frozen=True)
class Task:
    id: str
    tenant: str
    kind: str
    params: Any
    status: Status
    progress: float
    stage: str | None
    message: str | None
    error: dict[str, Any] | None
    result: Any
    items_total: int
    items_done: int
    items_failed: int
    attempts: int
    last_seq: int
    retry_of: str | None
    deadline_at: datetime | None
    run_at: datetime | None  # deferred: not started before this (a schedule's: its slot)
    schedule_id: str | None  # the schedule that made it
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "tenant"}
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        out["progress"] = round(self.progress, 2)
        return out


@dataclass(frozen=True)
class Claim:
    item_id: str
    task_id: str
    tenant: str
    kind: str
    params: Any
    index: int
    name: str
    payload: Any
    checkpoint: dict[str, Any]
    attempt: int
    items_total: int
    events: list[Event]


@dataclass(frozen=True)
class Finished:
    events: list[Event]
    task_status: str | None  # the task's end state, if this item was its last
    items_failed: int = 0


@dataclass(frozen=True)
class PendingJob:
    item_id: str
    job_id: str
    run_after: Any
    attempt: int = 1  # the attempt this job runs (claims so far + 1)
    tenant: str = ""  # whose turn it waits for, and whose caps it counts against
    kind: str = ""


@dataclass(frozen=True)
class Report:
    """One progress report of a running item."""
    task_id: str  # the order reports are written in (see longtask_progress)
    item_id: str
    owner: str
    percent: float
    stage: str | None
    message: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class NewItem:
    """One unit of fan-out: its own item row and its own ARQ job."""

    payload: Any
    name: str = ""


@dataclass(frozen=True)
class Created:
    """A new task (its first event, `pending`, is stored but not published: nobody can be
    listening to a task whose id they have not been told yet), or the one a replay found."""

    task: Task
    jobs: list[PendingJob]  # to enqueue after commit
    replayed: bool  # an earlier request with the same Idempotency-Key made it


@dataclass(frozen=True)
class Canceled:
    task: Task
    events: list[Event]  # empty when it was canceled already
    withdrawn: list[str] = field(default_factory=list)  # the job ids of items that never started


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempt at a task-end webhook, claimed from the outbox."""

    id: str  # the `webhook-id` of every attempt
    tenant: str
    task_id: str
    event: str  # task.completed | task.failed | task.canceled
    attempt: int  # this attempt's number, 1-based
    body: str | None  # what every attempt sends; None until the first one made it
    created_at: datetime


def item_job_id(item_id: str, attempt: int, retake: str = "") -> str:
    """The ARQ job id of one run of an item, also kept on its row: fresh per attempt, since ARQ
    blocks a reused id while it keeps the result. `retake` tells apart a new job for the same
    attempt (its first job was lost with a worker)."""
    return f"item:{item_id}:{attempt}" + (f":{retake}" if retake else "")


@dataclass(frozen=True)
class ApiKey:
    """What is kept of an API key: never the key itself, only its first characters."""

    id: str
    tenant: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def item_of_job(job_id: str) -> str | None:
    """The item an item job id (`item_job_id`) runs; None for another job (ARQ's cron jobs)."""
    parts = job_id.split(":")
    return parts[1] if len(parts) >= 3 and parts[0] == "item" else None
