"""The web process: `uvicorn server:app`."""

from longtask.api.app import create_app
from longtask.logs import configure_logging
from longtask.settings import Settings

configure_logging()
app = create_app(Settings.from_env())
