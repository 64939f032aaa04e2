"""The worker process as `arq worker.WorkerSettings` (the Procfile runs `longtask worker`, the
same worker without arq's own log handler). DATABASE_URL and REDIS_URL come from the
environment; unset, the process exits naming the variable, unless LONGTASK_EMBEDDED=1 asks for
embedded services (`.data/`). The package's own entry point, which needs no checkout, is
`arq longtask.worker.main.WorkerSettings`."""

import sys

from longtask.config import Settings
from longtask.core.errors import ConfigError
from longtask.dev import embedded
from longtask.obs.logs import configure_logging
from longtask.worker.main import worker_settings

try:
    settings = embedded.services(Settings.from_env())
    configure_logging(settings)
    WorkerSettings = worker_settings(settings)  # a bad REDIS_URL stops it here
except ConfigError as exc:
    sys.exit(f"longtask worker: {exc}")
