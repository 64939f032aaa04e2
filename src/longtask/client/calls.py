"""What the sync and the async client share: each request as a `Call` (what to send, how to read
the answer). Pure: no I/O here, so the two clients differ only in how they send. The bookkeeping
of a followed stream and of `wait` is in `client_follow`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from longtask.client import models
from longtask.client.errors import ClientError, ConnectionFailed, ServerError, error_for

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
UploadItem = str | os.PathLike[str] | tuple[str, bytes]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the parser of its (successful) answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] | None = None
    data: dict[str, str] | None = None
    files: list[tuple[str, tuple[str, IO[bytes] | bytes, str]]] | None = None

    def request(self) -> dict[str, Any]:
        """Keyword arguments for `httpx.Client.request` / `AsyncClient.request`."""
        out = {"params": self.params, "json": self.json, "headers": self.headers,
               "data": self.data, "files": self.files}
        return {k: v for k, v in out.items() if v is not None}


def settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    """The base URL and auth headers, from the arguments or `LONGTASK_URL`/`LONGTASK_API_KEY`."""
    url = base_url or os.environ.get("LONGTASK_URL") or DEFAULT_URL
    key = api_key or os.environ.get("LONGTASK_API_KEY")
    if not key:
        raise ClientError("no API key: pass api_key= or set LONGTASK_API_KEY", code="no_api_key")
    return url.rstrip("/"), {"Authorization": f"Bearer {key}"}


def answer(response: httpx.Response, parse: Callable[[httpx.Response], T]) -> T:
    """The parsed answer, or the typed error for a 4xx/5xx."""
    if response.status_code >= 400:
        raise error_for(response)
    try:
        return parse(response)
    except (ValueError, KeyError, TypeError) as exc:  # e.g. a proxy's HTML page with a 200
        raise ServerError(f"an answer that is not longtask's: {response.text[:200]!r}",
                          status=response.status_code, code="bad_answer") from exc


def transport_error(exc: httpx.TransportError, url: str) -> ConnectionFailed:
    return ConnectionFailed(f"cannot reach {url}: {type(exc).__name__}: {exc}".rstrip(": "))


def _json(build: Callable[[Any], T]) -> Callable[[httpx.Response], T]:
    return lambda response: build(response.json())


def _path(task_id: str, suffix: str = "") -> str:
    return f"/tasks/{quote(str(task_id), safe='')}{suffix}"


def submit(kind: str, params: Any, idempotency_key: str | None,
           deadline_seconds: float | None) -> Call[models.Task]:
    body: dict[str, Any] = {"kind": kind, "params": params}
    if deadline_seconds is not None:
        body["deadline_seconds"] = deadline_seconds
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
    return Call("POST", "/tasks", _json(models.task), json=body, headers=headers)


def upload(items: Iterable[UploadItem], metadata: dict[str, Any] | None, reindex: bool,
           files: ExitStack) -> Call[models.Upload]:
    """Paths are opened into `files` (closed by the caller once sent), not read into memory."""
    parts: list[tuple[str, tuple[str, IO[bytes] | bytes, str]]] = []
    for item in items:
        if isinstance(item, tuple):
            name, content = item
            parts.append(("files", (name, content, "application/octet-stream")))
        else:
            path = Path(item)
            parts.append(("files", (path.name, files.enter_context(path.open("rb")),
                                    "application/pdf" if path.suffix.lower() == ".pdf"
                                    else "application/octet-stream")))
    data = {"reindex": "true" if reindex else "false"}
    if metadata is not None:
        data["metadata"] = json.dumps(metadata)
    return Call("POST", "/documents", _json(models.upload), data=data, files=parts)


def get(task_id: str) -> Call[models.Task]:
    return Call("GET", _path(task_id), _json(models.task))


def page(status: str | None, kind: str | None, limit: int | None,
         cursor: str | None) -> Call[models.TaskPage]:
    params = {"status": status, "kind": kind, "limit": limit, "cursor": cursor}
    return Call("GET", "/tasks", _json(models.task_page),
                params={k: v for k, v in params.items() if v is not None})


def cancel(task_id: str) -> Call[models.Task]:
    return Call("POST", _path(task_id, "/cancel"), _json(models.task))


def retry(task_id: str) -> Call[models.Task]:
    return Call("POST", _path(task_id, "/retry"), _json(models.task))


def delete(task_id: str) -> Call[None]:
    return Call("DELETE", _path(task_id), lambda response: None)


def search(q: str, k: int | None, document_id: str | None,
           mode: str | None = None) -> Call[list[models.SearchHit]]:
    params = {"q": q, "k": k, "document_id": document_id, "mode": mode}
    return Call("GET", "/search", _json(models.search_hits),
                params={k: v for k, v in params.items() if v is not None})


def stats() -> Call[models.Stats]:
    return Call("GET", "/stats", _json(models.stats))


def events_path(task_id: str) -> str:
    return _path(task_id, "/events")
