"""Job kinds: an async function registered by name, optionally fanned out into items, with its
params optionally declared as a JSON Schema.

    import longtask

    @longtask.kind("echo")
    async def echo(ctx: longtask.JobContext, params: dict) -> dict:
        await ctx.progress(50, "halfway")
        return {"echo": params}

    @longtask.kind("thumbnails", items=lambda params: params["urls"], params_schema={
        "type": "object", "required": ["urls"], "additionalProperties": False,
        "properties": {"urls": {"type": "array", "minItems": 1, "maxItems": 500,
                                "items": {"type": "string", "pattern": "^https?://"}}}})
    async def thumbnail(ctx: longtask.JobContext, url: str) -> dict:
        ...  # runs once per url, each its own ARQ job, on any worker

A module holding kinds is named in `LONGTASK_KINDS` (comma-separated); the web process reads it
to validate submissions, the worker to run them. Keep such modules light at import time: import
heavy libraries inside the function.

Params are declared as a JSON Schema (2020-12, the dialect of OpenAPI 3.1), a plain dict,
rather than a pydantic model or a msgspec struct:
- a dict is data: this module stays standard library only (the layer contract), and a kind's
  module needs no import to declare one;
- the very dict that checks a submission is the one published in /openapi.json (and rendered at
  /docs), so what clients and fuzzers are told and what the server accepts cannot drift apart,
  as they do when a schema is generated from a class whose validation coerces ("10" -> 10);
- the handler gets the params as stored, plain JSON, on a retry or on another machine alike.
The service checks params against it at submit (`POST /tasks`, `POST /schedules`, and each
schedule firing) with the `jsonschema` package: a bad one is a 422 `invalid_params` that names
the field (`params.steps`: must be at most 10000), never a task that fails later in a worker.
A kind without a schema takes any JSON, as before. Defaults (`"default"`) are documentation: the
handler reads `params.get("steps", 10)`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from longtask.core.errors import ConfigError, Invalid, Unacceptable
from longtask.core.models import NewItem

if TYPE_CHECKING:
    from longtask.core.context import JobContext

Handler = Callable[["JobContext", Any], Awaitable[Any]]
Splitter = Callable[[Any], Iterable[Any]]

BUILTIN_MODULES = ("longtask.kinds.ingest", "longtask.kinds.agent", "longtask.kinds.generate")


@dataclass(frozen=True, eq=False)  # a kind is itself: compared and hashed by identity
class Kind:
    name: str
    handler: Handler
    items: Splitter | None = None  # params -> one payload per item; None: one item, the params
    item_name: Callable[[Any], str] | None = None
    timeout: float | None = None  # soft limit for one item, in seconds
    on_cancel: Handler | None = None  # cleanup for partial output of a canceled item
    public: bool = True  # False: made by the server itself (e.g. from an upload), not POST /tasks
    params_schema: dict[str, Any] | None = None  # JSON Schema 2020-12 of the params; None: any

    def split(self, params: Any) -> list[NewItem]:
        """The task's items, from its params; a bad params object is the caller's error (Unacceptable)."""
        if self.items is None:
            return [NewItem(params, self.name)]
        try:
            payloads = list(self.items(params))
        except (KeyError, TypeError, ValueError) as exc:
            raise Unacceptable(f"params do not fit kind {self.name!r}: {exc}",
                               code="invalid_params") from exc
        if not payloads:
            raise Unacceptable(f"kind {self.name!r} made no items from these params",
                               code="invalid_params")
        return [NewItem(p, self._name_of(p, i)) for i, p in enumerate(payloads)]

    def _name_of(self, payload: Any, index: int) -> str:
        if self.item_name is not None:
            return self.item_name(payload)
        if isinstance(payload, str):
            return payload[:200]
        return f"{self.name}[{index}]"


def kind(name: str, *, items: Splitter | None = None, item_name: Callable[[Any], str] | None = None,
         timeout: float | None = None, on_cancel: Handler | None = None,
         public: bool = True,
         params_schema: dict[str, Any] | None = None) -> Callable[[Handler], Kind]:
    """Make a job kind of an async function; the module-level name then holds the `Kind`.
    `params_schema`: the params' JSON Schema (2020-12), checked at submit and published."""
    if params_schema is not None and not isinstance(params_schema, dict):
        raise ConfigError(f"kind {name!r}: params_schema must be a JSON Schema (a dict)")

    def wrap(handler: Handler) -> Kind:
        return Kind(name, handler, items, item_name, timeout, on_cancel, public, params_schema)

    return wrap


class Registry:
    """The kinds found in a list of modules; built once per process."""

    def __init__(self, kinds: Iterable[Kind]) -> None:
        self._kinds: dict[str, Kind] = {}
        for k in kinds:
            if k.name in self._kinds and self._kinds[k.name] is not k:
                raise ConfigError(f"two job kinds are named {k.name!r}")
            self._kinds[k.name] = k

    @classmethod
    def from_modules(cls, modules: Iterable[str]) -> Registry:
        found: list[Kind] = []
        for module_name in (*BUILTIN_MODULES, *modules):
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise ConfigError(f"LONGTASK_KINDS: cannot import {module_name!r}: {exc}") from exc
            found.extend(v for v in vars(module).values() if isinstance(v, Kind))
        return cls(found)

    def get(self, name: str) -> Kind | None:
        return self._kinds.get(name)

    def for_submit(self, name: Any) -> Kind:
        """The kind a client may submit, or a 4xx that says which kinds there are."""
        if not isinstance(name, str) or not name:
            raise Invalid("`kind` must be a non-empty string", code="invalid_kind")
        found = self._kinds.get(name)
        if found is None or not found.public:
            known = sorted(k for k, v in self._kinds.items() if v.public)
            raise Unacceptable(f"unknown kind {name!r}; known kinds: {', '.join(known)}",
                               code="unknown_kind")
        return found

    def names(self) -> list[str]:
        return sorted(self._kinds)


def params_hash(kind_name: str, params: Any) -> str:
    """What an Idempotency-Key is bound to: the kind and the params, canonically."""
    import hashlib

    canonical = json.dumps([kind_name, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
