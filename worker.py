"""The worker process: `arq worker.WorkerSettings`."""

from longtask.worker.main import worker_settings
from longtask.obs.logs import configure_logging
from longtask.config import Settings

configure_logging()
WorkerSettings = worker_settings(Settings.from_env())
