"""The browser dashboard: `/` and its static files, served by the web process without auth (the
page asks for an API key and sends it as a Bearer header on each API call)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent.parent / "static"


async def dashboard(request: Request) -> Response:
    # no-cache: the page revalidates, so a deploy is seen on the next load
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


routes = [
    Route("/", dashboard, methods=["GET"]),
    Mount("/static", StaticFiles(directory=WEB_DIR), name="static"),
]
