"""Use cases of documents: ingest a batch of uploaded files as one task, one item per file."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from longtask.config import Settings
from longtask.core.errors import LimitReached, TooLarge
from longtask.core.models import Created, NewItem
from longtask.service import tasks as tasks_service
from longtask.service.deps import Deps
from longtask.store import documents as doc_store
from longtask.store import files as file_store
from longtask.store import tasks as task_store

INGEST = "ingest"
STORAGE_RETRY_AFTER = 60  # seconds: room comes as the tenant deletes documents


@dataclass(frozen=True)
class Incoming:
    """One uploaded file, read as it is stored."""

    name: str  # a display name, never a path
    read: Callable[[int], Awaitable[bytes]]


async def ensure_room(deps: Deps, tenant: str) -> None:
    """Refuse before the body is read: no point storing files for a task that cannot be made,
    or when the tenant's files fill its storage quota already."""
    if deps.admission is not None:
        await deps.admission.room_in_queue(tenant)
    await task_store.ensure_room(deps.pool, tenant, deps.settings.max_open_tasks)
    quota = deps.settings.max_tenant_bytes
    stored = await file_store.stored_bytes(deps.pool, tenant)
    if stored >= quota:
        raise LimitReached(f"this tenant's files fill its storage quota ({stored} of {quota} "
                           "bytes); delete documents to make room", code="quota_exceeded",
                           retry_after=STORAGE_RETRY_AFTER)


@dataclass(frozen=True)
class Ingesting:
    created: Created
    documents: list[dict[str, Any]]  # which document each file became (None: it was refused)


async def ingest(deps: Deps, tenant: str, files: list[Incoming], metadata: dict[str, Any],
                 reindex: bool) -> Ingesting:
    """Store each file (Postgres, so any worker on any machine can read it) and the document it
    becomes, then one ingest task with an item per file. A file over the size limit is still an
    item, which fails as `too_large` (`quota_exceeded` if it does not fit in the tenant's
    storage quota, `metadata_too_large` if its document's metadata would grow too large): the
    batch goes on without it. TooLarge, before anything is stored, for too much metadata."""
    check_metadata(deps.settings, metadata)
    items = [await _store(deps, tenant, incoming, metadata, reindex) for incoming in files]
    created = await tasks_service.create(
        deps, tenant, INGEST, {"files": [i.name for i in items], "reindex": reindex,
                               "metadata": metadata}, items)
    return Ingesting(created, [{"filename": i.name, "document_id": i.payload.get("document_id")}
                               for i in items])


def check_metadata(settings: Settings, metadata: dict[str, Any]) -> None:
    """TooLarge if an upload's metadata, as JSON text, is over LONGTASK_MAX_METADATA_BYTES: it
    is copied into each document of the upload."""
    size = len(json.dumps(metadata, ensure_ascii=False).encode())
    if size > settings.max_metadata_bytes:
        raise TooLarge(f"`metadata` is {size} bytes as JSON; the limit is "
                       f"{settings.max_metadata_bytes}", code="metadata_too_large")


async def _store(deps: Deps, tenant: str, incoming: Incoming, metadata: dict[str, Any],
                 reindex: bool) -> NewItem:
    settings = deps.settings
    limit, quota = settings.max_file_bytes, settings.max_tenant_bytes
    stored = await file_store.write(deps.pool, tenant, incoming.read, limit, quota)
    if stored.refused == file_store.QUOTA_EXCEEDED:
        return _rejected(incoming, "quota_exceeded", "this tenant's files would pass its "
                         f"storage quota of {quota} bytes with it; delete documents to make room")
    if stored.id is None:
        return _rejected(incoming, "too_large", f"{stored.size} bytes; the limit is {limit}")
    document_id = await doc_store.upsert(deps.pool, tenant, sha256=stored.sha256,
                                         file_id=stored.id, filename=incoming.name,
                                         size=stored.size, metadata=metadata,
                                         max_metadata=settings.max_metadata_bytes)
    if document_id is None:
        return _rejected(incoming, "metadata_too_large", "the document's metadata, merged with "
                         f"this upload's, would pass {settings.max_metadata_bytes} bytes; it is "
                         "left as it was")
    return NewItem({"document_id": document_id, "file_id": stored.id, "filename": incoming.name,
                    "size": stored.size, "reindex": reindex}, incoming.name)


def _rejected(incoming: Incoming, code: str, message: str) -> NewItem:
    return NewItem({"filename": incoming.name, "rejected": {"code": code, "message": message}},
                   incoming.name)
