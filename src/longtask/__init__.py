"""longtask: background jobs for AI-agent work, with live progress and nothing lost."""

from longtask.core.errors import JobCanceled, PermanentError, TransientError
from longtask.worker.context import JobContext
from longtask.core.kinds import Kind, kind

__all__ = ["JobCanceled", "JobContext", "Kind", "PermanentError", "TransientError", "kind"]
