"""What every route needs: the tenant behind a key, a JSON body, ids and query values."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import asyncpg
from starlette.requests import HTTPConnection, Request

from longtask.broker.streams import Lease
from longtask.core import tokens
from longtask.core.errors import Invalid, NotFound, TooLarge, Unauthenticated
from longtask.store import api_keys

_KEY_CACHE_SECONDS = 10.0  # a revoked key keeps working this long at most


class KeyCache:
    """Key -> tenant, looked up in Postgres and kept briefly, so a submit costs no extra query."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[bytes, tuple[str | None, float]] = {}

    async def tenant(self, key: str) -> str | None:
        digest = api_keys.hash_key(key)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        tenant = await api_keys.tenant_for(self._pool, key)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (tenant, now + _KEY_CACHE_SECONDS)
        return tenant


async def authenticate(request: HTTPConnection) -> str:
    """The tenant of the request's `Authorization: Bearer <key>`, counted against its rate."""
    tenant = await _key_tenant(request)
    await request.state.admission.request(tenant)
    return tenant


async def authenticate_stream(request: HTTPConnection, task_id: str) -> str:
    """A Bearer key, or a stream token for this very task (browsers' EventSource and
    WebSocket, which cannot send headers). Not counted against the request rate: a stream
    holds a lease instead (`open_stream`)."""
    token = request.query_params.get("token")
    if token is None or _bearer(request) is not None:
        return await _key_tenant(request)
    tenant = tokens.verify(request.state.secret, token, task_id)
    if tenant is None:
        raise Unauthenticated("this stream token is invalid, expired or for another task",
                              code="invalid_token")
    return tenant


async def open_stream(request: HTTPConnection, tenant: str) -> Lease:
    """One more open stream of `tenant`: its connect counted against the stream connect rate,
    and a lease on one of its LONGTASK_MAX_STREAMS places. LimitReached past either; close
    the lease when the stream ends."""
    state = request.state
    await state.admission.stream(tenant)
    lease: Lease = await state.streams.open(tenant)
    return lease


def task_id(request: HTTPConnection) -> str:
    """The `{id}` path value of a task route, normalised."""
    return uuid_value(request.path_params["id"], "task")


def uuid_value(raw: str, what: str) -> str:
    """An id, normalised; anything that is not a UUID is simply not found."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound(f"no {what} {raw[:100]!r}") from None


async def json_body(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"the body is over {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise TooLarge(f"the body is over {max_bytes} bytes")
    try:
        value = strict_json(body)
    except (ValueError, RecursionError) as exc:
        raise Invalid(f"the body is not valid JSON: {exc}"[:300], code="invalid_json") from None
    refuse_nul(value, "the body", "invalid_input")
    return value


def strict_json(text: str | bytes | bytearray) -> Any:
    """json.loads without NaN and Infinity (ValueError): Python's json reads them, JSON has
    not, Postgres refuses them (once a 500), and no schema's minimum or maximum catches a NaN."""
    return json.loads(text, parse_constant=_not_json)


def _not_json(word: str) -> Any:
    raise ValueError(f"{word} is not a JSON value")


def text_query(request: Request, name: str) -> str | None:
    """A text query parameter, stripped; None if absent or empty."""
    raw = request.query_params.get(name, "").strip()
    refuse_nul(raw, f"`{name}`", "invalid_query")
    return raw or None


def refuse_nul(value: Any, what: str, code: str) -> None:
    """Invalid (`code`) if a string in `value`, a key of an object included, holds a NUL
    character, which Postgres cannot store in text or jsonb (valid JSON as it is)."""
    path = _nul_path(value, "")
    if path is not None:
        where = f"{what}, at `{path}`," if path else what
        raise Invalid(f"{where} holds a NUL character (\\u0000), which cannot be stored",
                      code=code)


def _nul_path(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return inner.replace("\x00", "\\u0000")
            found = _nul_path(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f"`{name}` must be a whole number", code="invalid_query") from None
    if not low <= value <= high:
        raise Invalid(f"`{name}` must be between {low} and {high}", code="invalid_query")
    return value


async def _key_tenant(request: HTTPConnection) -> str:
    key = _bearer(request)
    if key is None:
        raise Unauthenticated("send `Authorization: Bearer <key>`; make a key with "
                              "`longtask keys create --tenant NAME`", code="missing_key")
    tenant = await request.state.keys.tenant(key)
    if tenant is None:
        raise Unauthenticated("this API key is unknown or revoked", code="invalid_key")
    return str(tenant)


def _bearer(request: HTTPConnection) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
