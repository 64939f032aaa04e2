"""longtask: background jobs for AI-agent work, with live progress and nothing lost.

The job author's API: `@kind` makes a job kind of an async function, which gets a `JobContext`.
Importing it loads no I/O library (the client and CLI live in `longtask.client`).
"""

from longtask.core.context import JobContext
from longtask.core.errors import JobCanceled, PermanentError, TransientError
from longtask.core.kinds import Kind, kind

__all__ = ["JobCanceled", "JobContext", "Kind", "PermanentError", "TransientError", "kind"]
