"""The web process for the Procfile: `uvicorn server:app`. With DATABASE_URL or REDIS_URL unset it
starts embedded ones (`.data/`). The package's own entry point, which needs no checkout and
takes the URLs from the environment, is `uvicorn --factory longtask.web.app:app_from_env`."""

from longtask.config import Settings
from longtask.dev import embedded
from longtask.obs.logs import configure_logging
from longtask.web.app import create_app

settings = Settings.from_env()
configure_logging(settings)
app = create_app(embedded.resolve(settings))
