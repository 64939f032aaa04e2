"""X-Request-ID on every response: the caller's, when it is sane, or a new one.

A pure ASGI middleware (not BaseHTTPMiddleware, which buffers and breaks event streams): it
stamps the header on the response start, so errors and SSE streams carry it too, and puts the
id in the logging context for every record made while the request runs.
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from longtask.obs import logs

HEADER = "X-Request-ID"
SCOPE_KEY = "longtask.request_id"  # for handlers outside this middleware (the 500 handler)
_SANE = re.compile(r"[A-Za-z0-9._-]{1,128}")


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(HEADER, "")
        ident = incoming if _SANE.fullmatch(incoming) else uuid.uuid4().hex
        scope[SCOPE_KEY] = ident

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = ident
            await send(message)

        with logs.context(request_id=ident):
            await self.app(scope, receive, stamped)


def of(scope: Scope) -> str | None:
    """The request id the middleware gave this request."""
    value = scope.get(SCOPE_KEY)
    return value if isinstance(value, str) else None
