"""What the client returns: small frozen dataclasses built from the server's JSON.

Fields the server adds later are ignored rather than breaking an older client.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, TypeVar

from longtask.core.events import AT, parse_at
from longtask.core.status import TERMINAL

T = TypeVar("T")


@dataclass(frozen=True)
class Item:
    """One unit of a task (a file of a batch), as `GET /tasks/{id}` lists it."""

    index: int
    id: str
    name: str = ""
    status: str = "pending"
    progress: float = 0.0
    stage: str | None = None
    message: str | None = None
    attempts: int = 0
    error: dict[str, Any] | None = None
    result: Any = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Task:
    """A task: its status, progress, result or error, and (from `get`) its items."""

    id: str
    kind: str
    status: str
    progress: float = 0.0
    stage: str | None = None
    message: str | None = None
    error: dict[str, Any] | None = None
    result: Any = None
    params: Any = None
    items_total: int = 0
    items_done: int = 0
    items_failed: int = 0
    attempts: int = 0
    last_seq: int = 0
    retry_of: str | None = None
    deadline_at: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    items: tuple[Item, ...] = ()

    @property
    def terminal(self) -> bool:
        """True once the task has ended: completed, failed or canceled."""
        return self.status in TERMINAL


LIVE_TYPES = frozenset({"delta", "text"})


@dataclass(frozen=True)
class Event:
    """One progress event: `seq` is its per-task sequence number (1, 2, 3 ... no gaps), `at`
    the time the server stored it (UTC, to the microsecond; None only from a server older than
    this field). `data` is the event's data as the job or the server made it: the stream's `at`
    key is taken out of it into `at`.

    Live LLM text comes as `delta` events (`item`, `step`, `offset`, `text`: put the text at
    its offset) and, after a reconnect, a `text` event with the whole text so far (replace what
    you had). They are not stored, so they share the `seq` of the stored event before them, and
    their `at` is when they were made.
    """

    seq: int
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None

    @property
    def live(self) -> bool:
        """True for live text (`delta`, `text`), which a replay does not repeat."""
        return self.type in LIVE_TYPES

    @property
    def terminal(self) -> bool:
        """True for the task's last event: the status that ends it."""
        return self.type == "status" and self.data.get("status") in TERMINAL


@dataclass(frozen=True)
class Document:
    """A document an upload made (or found unchanged): its id and file name."""

    id: str
    filename: str


@dataclass(frozen=True)
class Upload:
    """The answer to an upload: the ingest task and a document per file."""

    task: Task
    documents: tuple[Document, ...]


@dataclass(frozen=True)
class TaskPage:
    """One page of `list`; pass `next_cursor` back for the next (None: this was the last)."""

    tasks: tuple[Task, ...]
    next_cursor: str | None


@dataclass(frozen=True)
class SearchHit:
    """A chunk that matched a search, with its document, pages and a snippet in which the
    query's words are in `**bold**`. `score` is the mode's: fused ranks (hybrid), cosine
    similarity (vector) or ts_rank_cd (text); `similarity` is the cosine, when the vector side
    found the chunk."""

    document_id: str
    filename: str
    text: str
    score: float
    page_start: int | None = None
    page_end: int | None = None
    title: str | None = None
    idx: int = 0
    snippet: str = ""
    similarity: float | None = None
    vector_rank: int | None = None
    text_rank: int | None = None


@dataclass(frozen=True)
class Stats:
    """The tenant's tasks by status and by kind, the queue depth and the workers alive."""

    by_status: dict[str, int]
    by_kind: dict[str, dict[str, int]]
    queue_depth: int
    workers_alive: int


def event(seq: int, type_: str, data: Any) -> Event:
    """An event from a stream's JSON data, its `at` moved out of the data."""
    at = data.pop(AT, None) if isinstance(data, dict) else None
    return Event(seq, type_, data, parse_at(at) if isinstance(at, str) else None)


def task(data: dict[str, Any]) -> Task:
    items = tuple(build(Item, i) for i in data.get("items") or ())
    return build(Task, {**data, "items": items})


def upload(data: dict[str, Any]) -> Upload:
    docs = tuple(Document(str(d.get("document_id") or ""), str(d.get("filename", "")))
                 for d in data.get("documents") or ())
    return Upload(task(data), docs)


def task_page(data: dict[str, Any]) -> TaskPage:
    return TaskPage(tuple(task(t) for t in data.get("tasks", ())), data.get("next_cursor"))


def search_hits(data: dict[str, Any]) -> list[SearchHit]:
    return [build(SearchHit, hit) for hit in data.get("results", ())]


def stats(data: dict[str, Any]) -> Stats:
    tasks = data.get("tasks") or {}
    return Stats(dict(tasks.get("by_status") or {}), dict(tasks.get("by_kind") or {}),
                 int(data.get("queue_depth") or 0), int(data.get("workers_alive") or 0))


def build(cls: type[T], data: dict[str, Any]) -> T:
    """`cls` from the JSON fields it knows; ISO timestamps become datetimes."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values = {}
    for name, value in data.items():
        if name not in known:
            continue
        if isinstance(value, str) and name.endswith("_at"):
            value = datetime.fromisoformat(value)
        values[name] = value
    return cls(**values)
