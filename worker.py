"""The worker process for the Procfile: `arq worker.WorkerSettings`. With DATABASE_URL or
REDIS_URL unset it starts embedded ones (`.data/`). The package's own entry point, which needs
no checkout and takes the URLs from the environment, is
`arq longtask.worker.main.WorkerSettings`."""

from longtask.config import Settings
from longtask.dev import embedded
from longtask.obs.logs import configure_logging
from longtask.worker.main import worker_settings

settings = Settings.from_env()
configure_logging(settings)
WorkerSettings = worker_settings(embedded.resolve(settings))
