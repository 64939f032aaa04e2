"""Job kinds: an async function registered by name, optionally fanned out into items.

    import longtask

    @longtask.kind("echo")
    async def echo(ctx: longtask.JobContext, params: dict) -> dict:
        await ctx.progress(50, "halfway")
        return {"echo": params}

    @longtask.kind("thumbnails", items=lambda params: params["urls"])
    async def thumbnail(ctx: longtask.JobContext, url: str) -> dict:
        ...  # runs once per url, each its own ARQ job, on any worker

A module holding kinds is named in `LONGTASK_KINDS` (comma-separated); the web process reads it
to validate submissions, the worker to run them. Keep such modules light at import time: import
heavy libraries inside the function.
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


@dataclass(frozen=True)
class Kind:
    name: str
    handler: Handler
    items: Splitter | None = None  # params -> one payload per item; None: one item, the params
    item_name: Callable[[Any], str] | None = None
    timeout: float | None = None  # soft limit for one item, in seconds
    on_cancel: Handler | None = None  # cleanup for partial output of a canceled item
    public: bool = True  # False: made by the server itself (e.g. from an upload), not POST /tasks

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
         public: bool = True) -> Callable[[Handler], Kind]:
    """Make a job kind of an async function; the module-level name then holds the `Kind`."""

    def wrap(handler: Handler) -> Kind:
        return Kind(name, handler, items, item_name, timeout, on_cancel, public)

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
