"""The response bodies of /openapi.json: one JSON Schema per thing the API answers with."""

from __future__ import annotations

from typing import Any

from longtask.core.status import ALL

STATUSES = [s.value for s in ALL]


def ref(name: str) -> dict[str, str]:
    """A reference to one of SCHEMAS."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(type_: str, **extra: Any) -> dict[str, Any]:
    """`type_` or null."""
    return {"type": [type_, "null"], **extra}


TIME = {"type": "string", "format": "date-time"}
JOB_ERROR = {"type": ["object", "null"], "required": ["code", "message"],
             "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "detail"], "properties": {
        "error": {"type": "string", "description": "a stable code, e.g. not_found"},
        "detail": {"description": "what was wrong, for a person"}}},
    "Task": {"type": "object", "required": [
        "id", "kind", "status", "progress", "items_total", "items_done", "items_failed",
        "attempts", "last_seq", "created_at", "updated_at", "links"], "properties": {
        "id": {"type": "string", "format": "uuid"}, "kind": {"type": "string"},
        "params": {}, "status": {"type": "string", "enum": STATUSES},
        "progress": {"type": "number", "minimum": 0, "maximum": 100},
        "stage": nullable("string"), "message": nullable("string"), "error": JOB_ERROR,
        "result": {}, "items_total": {"type": "integer"}, "items_done": {"type": "integer"},
        "items_failed": {"type": "integer"}, "attempts": {"type": "integer"},
        "last_seq": {"type": "integer", "description": "the newest event's sequence number"},
        "retry_of": nullable("string"), "deadline_at": nullable("string"),
        "run_at": nullable("string"), "schedule_id": nullable("string"),
        "created_at": TIME, "started_at": nullable("string"),
        "finished_at": nullable("string"), "updated_at": TIME,
        "links": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "TaskWithItems": {"allOf": [{"$ref": "#/components/schemas/Task"}, {
        "type": "object", "required": ["items"], "properties": {"items": {
            "type": "array", "items": {"type": "object", "required": [
                "index", "id", "name", "status", "progress", "attempts"], "properties": {
                "index": {"type": "integer"}, "id": {"type": "string", "format": "uuid"},
                "name": {"type": "string"}, "status": {"type": "string", "enum": STATUSES},
                "progress": {"type": "number"}, "stage": nullable("string"),
                "message": nullable("string"), "attempts": {"type": "integer"},
                "error": JOB_ERROR, "result": {}, "started_at": nullable("string"),
                "finished_at": nullable("string")}}}}}]},
    "TaskPage": {"type": "object", "required": ["tasks", "next_cursor"], "properties": {
        "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
        "next_cursor": nullable("string")}},
    "Schedule": {"type": "object", "required": [
        "id", "kind", "cron", "paused", "next_run_at", "fired", "links"], "properties": {
        "id": {"type": "string", "format": "uuid"}, "kind": {"type": "string"}, "params": {},
        "cron": {"type": "string"}, "paused": {"type": "boolean"},
        "next_run_at": nullable("string", description="the next firing; null while paused"),
        "last_run_at": nullable("string"), "last_task_id": nullable("string"),
        "last_error": JOB_ERROR, "fired": {"type": "integer"}, "created_at": TIME,
        "updated_at": TIME,
        "links": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "SchedulePage": {"type": "object", "required": ["schedules", "next_cursor"], "properties": {
        "schedules": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}},
        "next_cursor": nullable("string")}},
    "StreamToken": {"type": "object", "required": ["token", "expires_in", "events_url"],
                    "properties": {"token": {"type": "string"},
                                   "expires_in": {"type": "integer"},
                                   "events_url": {"type": "string"},
                                   "ws_url": {"type": "string"}}},
    "UploadAccepted": {"allOf": [{"$ref": "#/components/schemas/Task"}, {
        "type": "object", "required": ["documents"], "properties": {"documents": {
            "type": "array", "items": {"type": "object", "required": ["filename"],
                                       "properties": {"filename": {"type": "string"},
                                                      "document_id": nullable("string")}}}}}]},
    "Document": {"type": "object", "required": ["id", "filename", "status"], "properties": {
        "id": {"type": "string", "format": "uuid"}, "filename": {"type": "string"},
        "sha256": {"type": "string"}, "size": {"type": "integer"}, "metadata": {"type": "object"},
        "status": {"type": "string"}, "error": JOB_ERROR, "title": nullable("string"),
        "pages": nullable("integer"), "chunk_count": {"type": "integer"},
        "summary": nullable("object"), "embedding_model": nullable("string"),
        "embedding_dim": nullable("integer"), "task_id": nullable("string"),
        "created_at": TIME, "indexed_at": nullable("string"), "language": {"type": "string"}}},
    "DocumentDetail": {"allOf": [{"$ref": "#/components/schemas/Document"}, {
        "type": "object", "required": ["page_texts", "chunks"], "properties": {
            "page_texts": {"type": "array"}, "chunks": {"type": "array"}}}]},
    "DocumentPage": {"type": "object", "required": ["documents", "next_cursor"], "properties": {
        "documents": {"type": "array", "items": {"$ref": "#/components/schemas/Document"}},
        "next_cursor": nullable("string")}},
    "SearchResults": {"type": "object", "required": ["query", "mode", "model", "results"],
                      "properties": {
        "query": {"type": "string"}, "mode": {"type": "string"}, "model": {"type": "string"},
        "results": {"type": "array", "items": {"type": "object", "required": [
            "document_id", "filename", "page_start", "page_end", "text", "snippet", "score"],
            "properties": {
            "document_id": {"type": "string", "format": "uuid"}, "filename": {"type": "string"},
            "title": nullable("string"), "idx": {"type": "integer"},
            "page_start": {"type": "integer"}, "page_end": {"type": "integer"},
            "text": {"type": "string"}, "snippet": {"type": "string"},
            "score": {"type": "number"}, "similarity": nullable("number"),
            "vector_rank": nullable("integer"), "text_rank": nullable("integer")}}}}},
    "Stats": {"type": "object", "required": ["tasks", "queue_depth", "workers_alive"],
              "properties": {"tasks": {"type": "object"}, "queue_depth": {"type": "integer"},
                             "queued": {"type": "integer"},
                             "workers_alive": {"type": "integer"},
                             "open_streams": {"type": "integer"},
                             "storage": {"type": "object", "properties": {
                                 "bytes": {"type": "integer"}, "quota": {"type": "integer"}}}}},
    "Health": {"type": "object", "required": ["status"],
               "properties": {"status": {"type": "string"}}},
    "Ready": {"type": "object", "required": ["status", "checks"], "properties": {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "checks": {"type": "object"}}},
}
