"""GET /docs: Swagger UI over /openapi.json, public like it, listing each kind with its params.

The UI's files come from the PyPI package `swagger-ui-py` (Swagger UI 5, the first that reads
OpenAPI 3.1; `swagger-ui-bundle` still carries 4.15) and are served from the package itself:
the page loads nothing from a CDN, and sends no document to Swagger's online validator."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from longtask.web.errors import error_response

PACKAGE = "swagger_ui"  # of swagger-ui-py, in the `[server]` extra

# relative URLs: the page also works behind a proxy that serves the API under a path
_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>longtask API</title>
  <link rel="stylesheet" href="docs/ui/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/ui/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/ui/swagger-ui-bundle.js"></script>
  <script src="docs/start.js"></script>
</body>
</html>
"""

_START = """// made by the server (longtask.web.routes.docs)
window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",          // no top bar that loads any URL typed into it
  deepLinking: true,
  persistAuthorization: true,    // the key, as the dashboard keeps it: in this browser only
  defaultModelRendering: "model",  // a request body shows its schema: each kind, its params
  defaultModelExpandDepth: 4,
  defaultModelsExpandDepth: 0,
  displayRequestDuration: true,
  validatorUrl: null,            // never send the document to validator.swagger.io
});
"""


def ui_dir() -> Path | None:
    """Swagger UI's files in the installed package; None without it. Found, not imported: the
    package's `__init__` loads jinja2 and yaml, which serving its files does not need."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        return None
    found = Path(spec.origin).parent / "static"
    return found if (found / "swagger-ui-bundle.js").is_file() else None


async def page(request: Request) -> Response:
    if ui_dir() is None:
        return error_response(404, "not_found", "Swagger UI is not installed here: "
                              "pip install 'longtask[server]' (it needs swagger-ui-py)")
    return HTMLResponse(_PAGE, headers={"Cache-Control": "no-cache"})


async def start(request: Request) -> Response:
    return Response(_START, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


def _routes() -> list[BaseRoute]:
    found = ui_dir()
    made: list[BaseRoute] = [Route("/docs", page, methods=["GET"]),
                             Route("/docs/start.js", start, methods=["GET"])]
    if found is not None:
        made.append(Mount("/docs/ui", StaticFiles(directory=found), name="swagger-ui"))
    return made


routes = _routes()
