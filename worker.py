"""The worker process: `arq worker.WorkerSettings`."""

from longtask.jobs.worker import worker_settings
from longtask.logs import configure_logging
from longtask.settings import Settings

configure_logging()
WorkerSettings = worker_settings(Settings.from_env())
