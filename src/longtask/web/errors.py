"""The one map from domain errors to HTTP: status codes and headers are decided here and
nowhere else. Every error answer is `{"error": code, "detail": ...}`."""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import JSONResponse, Response

from longtask.core.errors import (
    Conflict,
    DomainError,
    Invalid,
    LimitReached,
    NotFound,
    TooLarge,
    Unacceptable,
    Unauthenticated,
    Unavailable,
)

STATUS: dict[type[DomainError], int] = {
    Invalid: 400,
    Unauthenticated: 401,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    Unacceptable: 422,
    LimitReached: 429,
    Unavailable: 503,
}


def status_of(exc: DomainError) -> int:
    """The HTTP status of a domain error (400 for one of no mapped kind)."""
    for cls, status in STATUS.items():
        if isinstance(exc, cls):
            return status
    return 400


def headers_of(exc: DomainError) -> dict[str, str]:
    if exc.retry_after is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}


def error_response(status: int, code: str, detail: Any,
                   headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def domain_response(exc: DomainError) -> Response:
    return error_response(status_of(exc), exc.code, exc.detail, headers_of(exc))
