"""The one status vocabulary of tasks and items, for Python, the SQL builders and the dashboard.

    pending -> running -> completed | failed | canceled

States only move forward; Postgres enforces it too (the `longtask_forward_only` trigger).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


ACTIVE = frozenset({Status.PENDING, Status.RUNNING})
TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELED})
ALL = tuple(Status)  # in the order a task moves through them


def sql_in(statuses: Iterable[Status]) -> str:
    """A SQL list literal of statuses, e.g. `('pending', 'running')`, for a query builder: the
    values come from the enum, never from input."""
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses, key=ALL.index)) + ")"


ACTIVE_SQL = sql_in(ACTIVE)
TERMINAL_SQL = sql_in(TERMINAL)
