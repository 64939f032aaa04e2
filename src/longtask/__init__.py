"""longtask: background jobs for AI-agent work, with live progress and nothing lost."""

from longtask.errors import JobCanceled, PermanentError, TransientError
from longtask.jobs.context import JobContext
from longtask.kinds import Kind, kind

__all__ = ["JobCanceled", "JobContext", "Kind", "PermanentError", "TransientError", "kind"]
