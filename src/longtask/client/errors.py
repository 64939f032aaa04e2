"""Errors the Python client raises, one tree.

    ClientError                         the root: catch this for anything the client raises
    ├── ConnectionFailed                the server could not be reached (after retries, if any)
    ├── WaitTimeout                     `wait(timeout=...)` ran out (also a `TimeoutError`)
    └── StatusError                     the server answered {"error": code, "detail": ...}
        ├── InvalidRequest    400/413/422   the request itself is wrong; do not retry it
        ├── Unauthorized      401
        ├── NotFound          404       also another tenant's ids
        ├── Conflict          409       e.g. cancelling a task that has ended
        ├── RateLimited       429       `retry_after` seconds, if the server said
        └── ServerError       5xx
            └── Unavailable   503       Postgres or Redis down; `retry_after` seconds
"""

from __future__ import annotations

import json
from typing import Any

import httpx


class ClientError(Exception):
    """Anything the longtask client raises. `status`, `code` and `detail` are always there."""

    status: int | None = None
    code: str = "client_error"

    def __init__(self, detail: Any, *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"{self.status} " if self.status else ""
        return f"{where}{self.code}: {self.detail}"


class ConnectionFailed(ClientError):
    code = "connection_failed"


class WaitTimeout(ClientError, TimeoutError):
    code = "wait_timeout"


class StatusError(ClientError):
    pass


class InvalidRequest(StatusError):
    code = "invalid_request"


class Unauthorized(StatusError):
    code = "unauthorized"


class NotFound(StatusError):
    code = "not_found"


class Conflict(StatusError):
    code = "conflict"


class RateLimited(StatusError):
    code = "rate_limited"


class ServerError(StatusError):
    code = "server_error"


class Unavailable(ServerError):
    code = "unavailable"


_BY_STATUS: dict[int, type[StatusError]] = {
    400: InvalidRequest, 401: Unauthorized, 404: NotFound, 409: Conflict, 413: InvalidRequest,
    422: InvalidRequest, 429: RateLimited, 503: Unavailable,
}


def error_for(response: httpx.Response) -> StatusError:
    """The typed error for a 4xx/5xx answer whose body has been read."""
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else StatusError)
    code, detail = cls.code, response.text or response.reason_phrase
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        body = None
    if isinstance(body, dict) and "error" in body:
        code, detail = str(body["error"]), body.get("detail", detail)
    return cls(detail, status=status, code=code,
               retry_after=_seconds(response.headers.get("retry-after")))


def _seconds(raw: str | None) -> float | None:
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: rare, and a caller's own backoff does as well
