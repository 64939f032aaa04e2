"""The browser dashboard: `/` and its static files, served by the web process without auth (the
page asks for an API key and sends it as a Bearer header on each API call)."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from longtask.core.status import ACTIVE, ALL, TERMINAL

WEB_DIR = Path(__file__).resolve().parent.parent / "static"


async def dashboard(request: Request) -> Response:
    # no-cache: the page revalidates, so a deploy is seen on the next load
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def status_module(request: Request) -> Response:
    """The status vocabulary as an ES module, made from `longtask.core.status`: the dashboard
    imports it rather than keeping a copy."""
    return Response(_STATUS_JS, media_type="text/javascript",
                    headers={"Cache-Control": "no-cache"})


_STATUS_JS = (
    "// made by the server from longtask.core.status\n"
    f"export const STATUSES = {json.dumps([s.value for s in ALL])};\n"
    f"export const ACTIVE = {json.dumps([s.value for s in ALL if s in ACTIVE])};\n"
    f"export const TERMINAL = {json.dumps([s.value for s in ALL if s in TERMINAL])};\n"
)

routes = [
    Route("/", dashboard, methods=["GET"]),
    Route("/static/status.js", status_module, methods=["GET"]),
    Mount("/static", StaticFiles(directory=WEB_DIR), name="static"),
]
