"""HTTP request counts and durations, labelled by route template (`/tasks/{id}`, never the raw
path, so the number of series stays bounded). A pure ASGI middleware: streams pass through."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from longtask.obs.metrics import WebMetrics

UNMATCHED = "<unmatched>"


class HttpMetrics:
    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts: an exception on its way to the 500 handler
        counted = False

        def count() -> None:
            nonlocal counted
            if not counted:
                counted = True
                # the router leaves the matched route in the scope (a Route's path is its template)
                route = getattr(scope.get("route"), "path", None) or UNMATCHED
                self.metrics.request_done(scope["method"], route, status,
                                          time.perf_counter() - started)

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                count()  # before the client has the whole answer: a scrape after it sees it
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, noted)
        finally:
            count()
