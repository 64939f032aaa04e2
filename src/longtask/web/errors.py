"""The one map from domain errors to HTTP: status codes and headers are decided here and
nowhere else. Every error answer is `{"error": code, "detail": ...}`."""

from __future__ import annotations

import json
import math
import random
from typing import Any

from sse_starlette import ServerSentEvent
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


def come_back_later(exc: DomainError) -> Response:
    """A refused event stream, as a browser's `EventSource` recovers from it: it gives up for
    good on any answer but 200, so 200 with a `retry:` (the wait, in ms, jittered so that a
    crowd refused at once does not come back at once), one `error` event with the usual body,
    and the end of the stream, after which it reconnects by itself."""
    wait = max(1.0, exc.retry_after or 1.0)
    body = {"error": exc.code, "detail": exc.detail, "retry_after": math.ceil(wait)}
    frame = ServerSentEvent(data=json.dumps(body, separators=(",", ":")), event="error",
                            retry=int(wait * 1000 * random.uniform(0.75, 1.5))).encode()
    return Response(frame, media_type="text/event-stream", headers={
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers_of(exc)})
