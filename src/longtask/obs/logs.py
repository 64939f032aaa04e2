"""Logging set-up for the web and worker processes: one line per record, level from LOG_LEVEL.

LOG_FORMAT=text (the default) is for people; LOG_FORMAT=json writes one JSON object per line
(time, level, logger, message, and request_id / task_id / item_id when known, exc for a
traceback) for a log pipeline. The ids come from context variables: the request-id middleware
sets request_id, the runner task_id and item_id around an item's run. Stream tokens and bearer
keys are masked in both formats. `Settings` reads and checks both variables.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from longtask.config import Settings

IDS = ("request_id", "task_id", "item_id")
_VARS: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"longtask_{name}", default=None) for name in IDS}
_SECRETS = re.compile(r"(?i)([?&](?:token|key|api_key)=|bearer\s+)[^\s&\"']+")
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(settings: Settings) -> None:
    """Log at `settings.log_level`, in `settings.log_format` (text or json)."""
    level, style = settings.log_level, settings.log_format
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if style == "json" else
                         TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(_not_printed_yet)
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("arq").setLevel(level)
    adopt(*_UVICORN, "arq")  # servers that set up handlers of their own before they imported us


def adopt(*names: str) -> None:
    """Send these loggers' records through the root handler only: a server that installs
    handlers of its own (uvicorn, the `arq` command) would otherwise print each line twice, or
    once in its own format, with stream tokens in clear."""
    for name in names:
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            logger.removeHandler(handler)
        logger.propagate = True


def _not_printed_yet(record: logging.LogRecord) -> bool:
    """False for a record that a handler below the root printed already: the `arq` command adds
    one of its own after we set up, and prints its first lines before the worker's start-up
    hook can take it over (`adopt`)."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None and logger.parent is not None:  # up to the root, not including it
        if logger.handlers:
            return False
        logger = logger.parent if logger.propagate else None
    return True


@contextmanager
def context(**ids: str) -> Iterator[None]:
    """Log records made inside carry these ids (any of IDS)."""
    tokens = [(_VARS[name], _VARS[name].set(value)) for name, value in ids.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current(name: str) -> str | None:
    """The id `name` (one of IDS) of what runs now, if any."""
    return _VARS[name].get()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        for name in IDS:  # a LoggerAdapter's extra wins over the context
            value = getattr(record, name, None) or _VARS[name].get()
            if value:
                entry[name] = str(value)
        if record.exc_info:
            entry["exc"] = mask(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc"] = mask(record.exc_text)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def mask(text: str) -> str:
    """`text` with stream tokens and bearer keys replaced by `***`."""
    return _SECRETS.sub(r"\1***", text)
