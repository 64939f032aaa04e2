"""Errors, one tree.

    LongtaskError
    ├── ConfigError                 bad environment, raised at start
    ├── ApiError                    carries an HTTP status and a stable code
    │   ├── InvalidInput      400   malformed request
    │   ├── Unauthorized      401
    │   ├── NotFound          404   also for another tenant's ids
    │   ├── Conflict          409   e.g. cancelling a finished task
    │   ├── Unprocessable     422   well-formed but not acceptable (unknown kind)
    │   ├── PayloadTooLarge   413
    │   ├── TooManyRequests   429   a tenant over its rate or open-task limit (Retry-After)
    │   └── Unavailable       503   Postgres or Redis down, or the queue is full
    └── JobError                    raised by a job, stored on its item as {code, message}
        ├── TransientError          retried with backoff: timeouts, 429, 5xx, connection errors
        ├── PermanentError          given up at once: corrupt input, 4xx
        └── JobCanceled             the task was canceled; not an error of the item's own
"""

from __future__ import annotations

from typing import Any


class LongtaskError(Exception):
    pass


class ConfigError(LongtaskError):
    pass


class ApiError(LongtaskError):
    status_code = 400
    code = "bad_request"

    def __init__(self, detail: Any, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.headers = headers or {}


class InvalidInput(ApiError):
    status_code = 400
    code = "invalid_input"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "too_large"


class Unprocessable(ApiError):
    status_code = 422
    code = "unprocessable"


class TooManyRequests(ApiError):
    status_code = 429
    code = "rate_limited"


class Unavailable(ApiError):
    status_code = 503
    code = "unavailable"


class JobError(LongtaskError):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class TransientError(JobError):
    code = "transient"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class PermanentError(JobError):
    code = "failed"


class JobCanceled(JobError):
    code = "canceled"
