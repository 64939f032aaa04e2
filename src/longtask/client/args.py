"""What the CLI's arguments must look like: argparse types that turn a bad value into a clear
message and exit code 2, before anything is sent to the server."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

MAX_STEPS = 20  # the server's limit for an agent run (jobs/agent.py)


def json_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, e.g. '{{\"team\": \"docs\"}}', "
                                         f"not {raw!r}")
    return value


def question(raw: str) -> str:
    if not raw.strip():
        raise argparse.ArgumentTypeError("the question is empty")
    return raw.strip()


def document_ids(raw: str) -> list[str]:
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    for ident in ids:
        try:
            uuid.UUID(ident)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a document id: {ident!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("name at least one document id")
    return ids


def max_steps(raw: str) -> int:
    try:
        steps = int(raw)
    except ValueError:
        steps = 0
    if not 1 <= steps <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"must be a number from 1 to {MAX_STEPS}, not {raw!r}")
    return steps
