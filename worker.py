"""The worker process for the Procfile: `arq worker.WorkerSettings`. The package's own entry
point, which needs no checkout, is `arq longtask.worker.main.WorkerSettings`."""

from longtask.worker.main import WorkerSettings

__all__ = ["WorkerSettings"]
