"""GET /openapi.json: the API described as OpenAPI 3.1, with the submittable kinds of this very
deployment. tests/api/test_openapi.py checks that it names every route and fuzzes it."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from longtask.core.kinds import Registry
from longtask.store import search
from longtask.web.params_doc import KindBodies
from longtask.web.schemas import SCHEMAS, STATUSES, ref

SEARCH_DESCRIPTION = (
    "`mode=hybrid` (the default) fuses the words (Postgres full text, in each document's "
    "language) and the meaning (the embedding) by reciprocal rank fusion; `vector` and `text` "
    "use one of them. Each hit carries its pages and a `snippet` with the query's words in "
    "`**bold**`. A `document_id` search, or a tenant's, returns its exact top k (see README).")

_ERRORS = {
    "400": "malformed request", "401": "missing or unknown key", "404": "not found (also "
    "another tenant's)", "409": "not in a state for this (or an Idempotency-Key used for "
    "another request)", "413": "body too large",
    "422": "well-formed but not acceptable", "429": "over a tenant limit; see Retry-After",
    "503": "a backing service is away or the queue is full; see Retry-After",
}


_DEFERRAL = {
    "deadline_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 2_592_000},
    "run_at": {"type": "string", "format": "date-time",
               "description": "not before this (with a timezone; up to 30 days ahead)"},
    "delay": {"type": "number", "minimum": 0, "maximum": 2_592_000,
              "description": "or: not before this many seconds from now"}}
_CRON = {"type": "string", "maxLength": 200,
         "description": "UTC; 5 fields, or 6 with seconds first (`*/10 * * * * *`)"}
_SUBMIT = ("`params` must fit the kind's schema (see Schema below), or the answer is a 422 "
           "`invalid_params` naming each field that does not. The kinds of this deployment:\n\n")


def spec(registry: Registry) -> dict[str, Any]:
    """The whole document; `registry` gives the kinds a client may submit, each with its
    params schema."""
    kinds = KindBodies.of(registry)
    task_id = _path_id("task")
    document_id = _path_id("document")
    paths: dict[str, Any] = {
        "/tasks": {
            "post": _op("Submit a task", ["400", "401", "409", "413", "422", "429", "503"],
                        body=kinds.body("task", _DEFERRAL, []), examples=kinds.examples(),
                        description=_SUBMIT + kinds.described(),
                        ok={"202": ("accepted; it runs in the background", ref("Task"))},
                        parameters=[_header("Idempotency-Key",
                                            "a repeat returns the same task")]),
            "get": _op("List tasks, newest first", ["400", "401", "429"], parameters=[
                _query("status", {"type": "string", "enum": STATUSES}),
                _query("kind", {"type": "string"}),
                _query("schedule_id", {"type": "string", "format": "uuid"}),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                _query("cursor", {"type": "string"})],
                ok={"200": ("a page", ref("TaskPage"))}),
        },
        "/tasks/{id}": {
            "get": _op("A task with its items", ["401", "404", "429"], parameters=[task_id],
                       ok={"200": ("the task", ref("TaskWithItems"))}),
            "delete": _op("Delete an ended task", ["401", "404", "409", "429"],
                          parameters=[task_id], ok={"204": ("deleted", None)}),
        },
        "/tasks/{id}/cancel": {"post": _op(
            "Cancel a task", ["401", "404", "409", "429"], parameters=[task_id],
            ok={"200": ("canceled (also if it was already)", ref("Task"))})},
        "/tasks/{id}/retry": {"post": _op(
            "Run an ended task's failed items again, as a new task",
            ["401", "404", "409", "429", "503"], parameters=[task_id],
            ok={"202": ("the new task", ref("Task"))})},
        "/tasks/{id}/stream-token": {"post": _op(
            "A short-lived token for the event stream (browsers' EventSource)",
            ["401", "404", "429"], parameters=[task_id],
            ok={"200": ("the token", ref("StreamToken"))})},
        "/tasks/{id}/events": {"get": _op(
            "Server-Sent Events: the history after Last-Event-ID (or `after`), then live; "
            "`id:` is the event's sequence number, and `data` (JSON) has `at`, the time it was "
            "stored (UTC, e.g. 2026-11-30T16:04:05.123456Z); closes after the task's end. The "
            "same events come over a WebSocket at /tasks/{id}/ws (see the README). Over the "
            "tenant's open-stream limit: 429, or, when the request accepts text/event-stream "
            "(EventSource), 200 with `retry:`, an `error` event and the end of the stream",
            ["400", "401", "404", "429"], parameters=[
                task_id, _query("after", {"type": "integer", "minimum": 0}),
                _query("token", {"type": "string"}),
                _header("Last-Event-ID", "resume after this sequence number")],
            ok={"200": ("the stream", {"type": "string"}, "text/event-stream"),
                "204": ("the task has ended and nothing is left to send", None)})},
        **_schedule_paths(kinds),
        "/documents": {
            "post": _op("Upload PDFs: one ingest item per file", [
                "400", "401", "413", "422", "429", "503"], body={
                    "type": "object", "required": ["files"], "properties": {
                        "files": {"type": "array", "items": {
                            "type": "string", "format": "binary"}},
                        "metadata": {"type": "string", "description": "a JSON object"},
                        "reindex": {"type": "string", "enum": ["true", "false"]}}},
                body_type="multipart/form-data",
                ok={"202": ("the ingest task", ref("UploadAccepted"))}),
            "get": _op("List documents", ["400", "401", "429"], parameters=[
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                _query("cursor", {"type": "string"})],
                ok={"200": ("a page", ref("DocumentPage"))}),
        },
        "/documents/{id}": {
            "get": _op("A document with its page texts and chunks", ["401", "404", "429"],
                       parameters=[document_id],
                       ok={"200": ("the document", ref("DocumentDetail"))}),
            "delete": _op("Delete a document and its chunks", ["401", "404", "429"],
                          parameters=[document_id], ok={"204": ("deleted", None)}),
        },
        "/search": {"get": _op("The chunks that best answer a query", ["400", "401", "404", "429",
                                                                       "503"],
                               description=SEARCH_DESCRIPTION, parameters=[
            _query("q", {"type": "string", "minLength": 1, "maxLength": 2000}, required=True),
            _query("k", {"type": "integer", "minimum": 1, "maximum": 50}),
            _query("document_id", {"type": "string", "format": "uuid"}),
            _query("mode", {"type": "string", "enum": list(search.MODES), "default": "hybrid"})],
            ok={"200": ("the hits, best first", ref("SearchResults"))})},
        "/stats": {"get": _op("The tenant's tasks by status and kind, queue and workers",
                              ["401", "429"], ok={"200": ("figures", ref("Stats"))})},
        "/health": {"get": {"summary": "Liveness", "security": [], "responses": {
            "200": _response("the process is up", ref("Health"))}}},
        "/ready": {"get": {"summary": "Readiness: Postgres, Redis, a worker", "security": [],
                           "responses": {"200": _response("ready", ref("Ready")),
                                         "503": _response("not ready", ref("Ready"))}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics, all tenants (off unless LONGTASK_METRICS_TOKEN)",
            "security": [{"metrics": []}],
            "responses": {"200": _response("the text exposition format",
                                           {"type": "string"}, "text/plain"),
                          "401": _response("without the scraper's token", ref("Error")),
                          "404": _response("off: LONGTASK_METRICS_TOKEN is unset",
                                           ref("Error"))}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {
            "200": _response("OpenAPI 3.1", {"type": "object"})}}},
    }
    return {"openapi": "3.1.0",
            "info": {"title": "longtask", "version": "0.1.0",
                     "description": "Background jobs for AI-agent work, with live progress."},
            "paths": paths,
            "components": {"schemas": {**SCHEMAS, **kinds.components}, "securitySchemes": {
                "key": {"type": "http", "scheme": "bearer",
                        "description": "`longtask keys create --tenant NAME`"},
                "metrics": {"type": "http", "scheme": "bearer",
                            "description": "LONGTASK_METRICS_TOKEN, the scraper's own"}}},
            "security": [{"key": []}]}


def _schedule_paths(kinds: KindBodies) -> dict[str, Any]:
    schedule_id = _path_id("schedule")

    def state_change(summary: str) -> dict[str, Any]:
        return {"post": _op(summary, ["401", "404", "429"], parameters=[schedule_id],
                            ok={"200": ("the schedule", ref("Schedule"))})}

    return {
        "/schedules": {
            "post": _op("Create a recurring task", ["400", "401", "413", "422", "429"],
                        body=kinds.body("schedule", {"cron": _CRON}, ["cron"]),
                        examples=kinds.examples({"cron": "0 * * * *"}),
                        description="Each firing's task gets these params, checked now against "
                                    "the kind's schema (422 `invalid_params`) and again at each "
                                    "firing.",
                        ok={"201": ("created", ref("Schedule"))}),
            "get": _op("List schedules, newest first", ["400", "401", "429"], parameters=[
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                _query("cursor", {"type": "string"})],
                ok={"200": ("a page", ref("SchedulePage"))}),
        },
        "/schedules/{id}": {
            "get": _op("A schedule, with its next firing", ["401", "404", "429"],
                       parameters=[schedule_id], ok={"200": ("the schedule", ref("Schedule"))}),
            "delete": _op("Delete a schedule (its tasks stay)", ["401", "404", "429"],
                          parameters=[schedule_id], ok={"204": ("deleted", None)}),
        },
        "/schedules/{id}/pause": state_change("Pause: no firing until resumed"),
        "/schedules/{id}/resume": state_change("Resume; slots missed while paused do not fire"),
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(request.state.openapi)


routes = [Route("/openapi.json", openapi, methods=["GET"])]


# --- building blocks -------------------------------------------------------------------------

def _op(summary: str, errors: list[str], *, ok: dict[str, tuple[Any, ...]],
        parameters: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None,
        body_type: str = "application/json", examples: dict[str, Any] | None = None,
        description: str | None = None) -> dict[str, Any]:
    responses = {code: _response(*answer) for code, answer in ok.items()}
    responses.update({code: _response(_ERRORS[code], ref("Error")) for code in errors})
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        media: dict[str, Any] = {"schema": body}
        if examples:
            media["examples"] = examples
        op["requestBody"] = {"required": True, "content": {body_type: media}}
    return op


def _response(description: str, schema: dict[str, Any] | None,
              media: str = "application/json") -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {media: {"schema": schema}}}


def _path_id(what: str) -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "description": f"the {what}'s id",
            "schema": {"type": "string", "format": "uuid"}}


def _query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}
