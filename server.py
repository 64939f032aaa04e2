"""The web process for the Procfile: `uvicorn server:app`. The package's own entry point, which
needs no checkout, is `uvicorn --factory longtask.web.app:app_from_env`."""

from longtask.web.app import app_from_env

app = app_from_env()
