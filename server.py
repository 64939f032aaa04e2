"""The web process: `uvicorn server:app`."""

from longtask.web.app import create_app
from longtask.obs.logs import configure_logging
from longtask.config import Settings

configure_logging()
app = create_app(Settings.from_env())
