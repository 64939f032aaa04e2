"""/documents: upload a batch of files (one ingest item each), list, show, delete; /search."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive

from longtask.core.errors import Invalid, TooLarge, Unacceptable
from longtask.service import documents as documents_service
from longtask.service.documents import Incoming
from longtask.store import documents as doc_store
from longtask.store import search as search_store
from longtask.web.common import authenticate, int_query, refuse_nul, strict_json, uuid_value
from longtask.web.routes.tasks import accepted, decode_cursor, encode_cursor

MAX_QUERY_CHARS = 2000
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


async def upload(request: Request) -> Response:
    tenant = await authenticate(request)
    state = request.state
    settings = state.settings
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_request_bytes:
        raise TooLarge(f"the request is over {settings.max_request_bytes} bytes")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise Invalid("send the files as multipart/form-data, each in a `files` field",
                      code="invalid_multipart")
    await documents_service.ensure_room(state.deps, tenant)
    limited = Request(request.scope, _limit(request.receive, settings.max_request_bytes))
    try:
        form = await limited.form(max_files=settings.max_files, max_fields=20)
    except HTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise Unacceptable(f"at most {settings.max_files} files per upload",
                               code="too_many_files") from None
        raise Invalid(f"malformed multipart body: {exc.detail}", code="invalid_multipart") \
            from None
    try:
        uploads = [v for v in form.getlist("files") + form.getlist("file")
                   if isinstance(v, UploadFile)]
        if not uploads:
            raise Unacceptable("no files: send each in a `files` field", code="no_files")
        metadata = _metadata(form.get("metadata"))
        reindex = str(form.get("reindex", "")).lower() in ("1", "true", "yes")
        ingesting = await documents_service.ingest(
            state.deps, tenant, [Incoming(safe_filename(up.filename), up.read) for up in uploads],
            metadata, reindex)
    finally:
        await form.close()
    return accepted(ingesting.created, documents=ingesting.documents)


async def index(request: Request) -> Response:
    tenant = await authenticate(request)
    limit = int_query(request, "limit", 50, 1, 200)
    page = await doc_store.list_page(request.state.pool, tenant, limit,
                                     decode_cursor(request.query_params.get("cursor")))
    return JSONResponse({
        "documents": [d.as_dict() for d in page],
        "next_cursor": encode_cursor(page[-1].created_at, page[-1].id)
        if len(page) == limit else None})


async def show(request: Request) -> Response:
    tenant = await authenticate(request)
    pool = request.state.pool
    doc = await doc_store.get(pool, tenant, _document_id(request))
    body = doc.as_dict()
    body["page_texts"] = await doc_store.pages(pool, tenant, doc.id)
    body["chunks"] = await doc_store.chunks(pool, tenant, doc.id)
    return JSONResponse(body)


async def delete(request: Request) -> Response:
    tenant = await authenticate(request)
    await doc_store.delete(request.state.pool, tenant, _document_id(request))
    return Response(status_code=204)


async def search(request: Request) -> Response:
    tenant = await authenticate(request)
    state = request.state
    query = request.query_params.get("q", "").strip()  # never stored: any text will do
    if not query:
        raise Invalid("`q` is required", code="invalid_query")
    if len(query) > MAX_QUERY_CHARS:
        raise Invalid(f"`q` is over {MAX_QUERY_CHARS} characters", code="invalid_query")
    k = int_query(request, "k", 5, 1, 50)
    mode = request.query_params.get("mode") or "hybrid"
    if mode not in search_store.MODES:
        raise Invalid(f"`mode` must be one of {', '.join(search_store.MODES)}",
                      code="invalid_mode")
    document_id = request.query_params.get("document_id") or None
    if document_id is not None:
        document_id = uuid_value(document_id, "document")
        await doc_store.get(state.pool, tenant, document_id)  # 404 for another tenant's
    embedder = state.query_embedder
    vector = None if mode == "text" else (await embedder.embed([query]))[0]
    results = await search_store.search(state.pool, tenant, search_store.Query(
        query, k, mode, vector, embedder.model, [document_id] if document_id else None))
    return JSONResponse({"query": query, "mode": mode, "model": embedder.model,
                         "results": results})


def safe_filename(raw: str | None) -> str:
    """A display name, never a path: no directories, no control characters, 200 chars at most."""
    name = unicodedata.normalize("NFC", raw or "")
    name = _UNSAFE.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip(" .")
    return name[:200] or "upload"


def _metadata(raw: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    try:
        value = strict_json(str(raw))
    except (ValueError, RecursionError):
        raise Invalid("`metadata` must be a JSON object", code="invalid_metadata") from None
    if not isinstance(value, dict):
        raise Invalid("`metadata` must be a JSON object", code="invalid_metadata")
    refuse_nul(value, "`metadata`", "invalid_metadata")
    return value


def _document_id(request: Request) -> str:
    return uuid_value(request.path_params["id"], "document")


def _limit(receive: Receive, max_bytes: int) -> Receive:
    """The request body, cut off with a 413 as soon as it passes `max_bytes`."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > max_bytes:
            raise TooLarge(f"the request is over {max_bytes} bytes")
        return message

    return limited


routes = [
    Route("/documents", upload, methods=["POST"]),
    Route("/documents", index, methods=["GET"]),
    Route("/documents/{id}", show, methods=["GET"]),
    Route("/documents/{id}", delete, methods=["DELETE"]),
    Route("/search", search, methods=["GET"]),
]
