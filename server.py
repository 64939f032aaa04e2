"""The web process as `uvicorn server:app` (the Procfile runs `longtask web`, the same app in
WEB_CONCURRENCY processes). DATABASE_URL and REDIS_URL come from the environment; unset, the
process exits naming the variable, unless LONGTASK_EMBEDDED=1 asks for embedded services
(`.data/`). The package's own entry point, which needs no checkout, is
`uvicorn --factory longtask.web.app:app_from_env`."""

import sys

from longtask.config import Settings
from longtask.core.errors import ConfigError
from longtask.dev import embedded
from longtask.obs.logs import configure_logging
from longtask.web.app import create_app

try:
    settings = embedded.services(Settings.from_env())
    configure_logging(settings)
    app = create_app(settings)  # a bad REDIS_URL stops it here
except ConfigError as exc:
    sys.exit(f"longtask web: {exc}")
