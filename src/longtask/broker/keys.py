"""Every Redis key and channel name longtask uses, built in one place."""

from __future__ import annotations

from arq import constants as arq_constants

PREFIX = "longtask"
TASK_CHANNEL_PATTERN = f"{PREFIX}:task:*"
CANCEL_CHANNEL = f"{PREFIX}:cancel"
WORKER_PATTERN = f"{PREFIX}:worker:*"
RATE_LIMIT_PREFIX = f"{PREFIX}:rate"  # the limits library's keys, per tenant and window
PROVIDER_LIMIT_PREFIX = f"{PREFIX}:provider"  # requests and tokens sent to the LLM provider


def task_channel(task_id: str) -> str:
    """The pub/sub channel that carries a task's events."""
    return f"{PREFIX}:task:{task_id}"


def task_id_from_channel(channel: str) -> str:
    return channel.rsplit(":", 1)[1]


def open_streams(tenant: str) -> str:
    """A tenant's open event streams: a sorted set of stream ids, each scored by the time its
    lease runs out (the web process that holds it renews it while the stream is open)."""
    return f"{PREFIX}:streams:{tenant}"


def worker_key(worker_id: str) -> str:
    """A worker's heartbeat: present while the worker is alive (it expires otherwise)."""
    return f"{PREFIX}:worker:{worker_id}"


def worker_metrics(queue: str, worker_id: str) -> str:
    """What a worker of `queue` last published of its metrics; expires unless published again."""
    return f"{PREFIX}:metrics:{queue}:{worker_id}"


def worker_metrics_index(queue: str) -> str:
    """The set of the ids of `queue`'s workers that have published metrics lately."""
    return f"{PREFIX}:metrics:{queue}"


def fair_prefix(queue: str) -> str:
    """The prefix of fair dispatch's keys for `queue` (the lanes, the ring, the counts; the
    names under it are made by broker/fair.lua)."""
    return f"{PREFIX}:fair:{queue}:"


def arq_in_progress(job_id: str) -> str:
    """ARQ's marker that some worker has taken a job (held until the job ends or job_timeout)."""
    return f"{arq_constants.in_progress_key_prefix}{job_id}"


EMBED_REQUESTS = f"{PREFIX}:embed:requests"


def embed_reply(request_id: str) -> str:
    """Where a worker puts the vectors a web process asked for (query embeddings)."""
    return f"{PREFIX}:embed:reply:{request_id}"


def duty_lock(name: str, queue: str) -> str:
    """Held by the one worker of `queue` doing a periodic duty (reap, reconcile, schedule) this
    interval: workers of another queue do their own queue's."""
    return f"{PREFIX}:duty:{queue}:{name}"
