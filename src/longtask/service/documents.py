"""Use cases of documents: ingest a batch of uploaded files as one task, one item per file."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from longtask.core.models import Created, NewItem
from longtask.service import tasks as tasks_service
from longtask.service.deps import Deps
from longtask.store import documents as doc_store
from longtask.store import files as file_store
from longtask.store import tasks as task_store

INGEST = "ingest"


@dataclass(frozen=True)
class Incoming:
    """One uploaded file, read as it is stored."""

    name: str  # a display name, never a path
    read: Callable[[int], Awaitable[bytes]]


async def ensure_room(deps: Deps, tenant: str) -> None:
    """Refuse before the body is read: no point storing files for a task that cannot be made."""
    if deps.admission is not None:
        await deps.admission.room_in_queue(tenant)
    await task_store.ensure_room(deps.pool, tenant, deps.settings.max_open_tasks)


@dataclass(frozen=True)
class Ingesting:
    created: Created
    documents: list[dict[str, Any]]  # which document each file became (None: it was refused)


async def ingest(deps: Deps, tenant: str, files: list[Incoming], metadata: dict[str, Any],
                 reindex: bool) -> Ingesting:
    """Store each file (Postgres, so any worker on any machine can read it) and the document it
    becomes, then one ingest task with an item per file. A file over the size limit is still an
    item, which fails as `too_large`: the batch goes on without it."""
    items = [await _store(deps, tenant, incoming, metadata, reindex) for incoming in files]
    created = await tasks_service.create(
        deps, tenant, INGEST, {"files": [i.name for i in items], "reindex": reindex,
                               "metadata": metadata}, items)
    return Ingesting(created, [{"filename": i.name, "document_id": i.payload.get("document_id")}
                               for i in items])


async def _store(deps: Deps, tenant: str, incoming: Incoming, metadata: dict[str, Any],
                 reindex: bool) -> NewItem:
    limit = deps.settings.max_file_bytes
    stored = await file_store.write(deps.pool, tenant, incoming.read, limit)
    if stored.id is None:
        return NewItem({"filename": incoming.name, "rejected": {
            "code": "too_large", "message": f"{stored.size} bytes; the limit is {limit}"}},
            incoming.name)
    document_id = await doc_store.upsert(deps.pool, tenant, sha256=stored.sha256,
                                         file_id=stored.id, filename=incoming.name,
                                         size=stored.size, metadata=metadata)
    return NewItem({"document_id": document_id, "file_id": stored.id, "filename": incoming.name,
                    "size": stored.size, "reindex": reindex}, incoming.name)
