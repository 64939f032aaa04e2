"""Errors, one tree. Nothing here knows HTTP: the web layer maps each class to a status code
and headers in one place (`longtask.web.errors`).

    LongtaskError
    ├── ConfigError                 bad environment, raised at start
    ├── DomainError                 a request that cannot be served as asked: `code`, `detail`
    │   ├── Invalid                 malformed input
    │   ├── Unauthenticated         no key, or an unknown one
    │   ├── NotFound                also for another tenant's ids
    │   ├── Conflict                e.g. cancelling a finished task
    │   ├── TooLarge                a body or file over its limit
    │   ├── Unacceptable            well-formed but not acceptable (unknown kind, bad params)
    │   ├── LimitReached            a tenant over its rate or open-task limit (`retry_after`)
    │   └── Unavailable             Postgres or Redis down, or the queue full (`retry_after`)
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


class DomainError(LongtaskError):
    code = "bad_request"

    def __init__(self, detail: Any, *, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.retry_after = retry_after  # seconds the caller should wait before trying again


class Invalid(DomainError):
    code = "invalid_input"


class Unauthenticated(DomainError):
    code = "unauthorized"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class TooLarge(DomainError):
    code = "too_large"


class Unacceptable(DomainError):
    code = "unprocessable"


class LimitReached(DomainError):
    code = "rate_limited"


class Unavailable(DomainError):
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
