"""One frozen `Settings`, read from the environment once by `server.py`, `worker.py` or the CLI.

Every variable is parsed and checked here, so a typo fails at start with a message naming the
variable, never deep inside a request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from longtask.core.errors import ConfigError

T = TypeVar("T")
DEFAULT_QUEUE = "longtask:queue"


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None  # None: embedded PostgreSQL under data_dir
    redis_url: str | None = None  # None: a private redis-server under data_dir
    port: int = 8000
    data_dir: Path = Path(".data")
    secret: str = ""  # signs stream tokens; when unset, one is made and kept in Postgres
    kinds: tuple[str, ...] = ()  # extra modules that register job kinds
    queue_name: str = DEFAULT_QUEUE
    worker_concurrency: int = 16
    job_timeout: float = 3600.0  # ARQ's hard limit for one item
    item_timeout: float = 1800.0  # the soft limit: the item is stopped, cleaned up, `timeout`
    webhook_url: str | None = None  # POSTed the task when it ends with failures
    lease_seconds: float = 20.0  # a running item's lease; the heartbeat renews it
    heartbeat_seconds: float = 5.0
    reaper_seconds: int = 5  # how often expired leases are handed to another worker
    shutdown_grace: float = 20.0  # on SIGTERM, running items get this long to finish
    max_retries: int = 3
    retry_delays: tuple[float, ...] = (60.0, 120.0, 240.0)
    retention_days: float = 30.0
    sse_ping_seconds: float = 15.0
    stream_token_ttl: float = 600.0
    max_params_bytes: int = 256 * 1024
    db_pool_min: int = 1
    db_pool_max: int = 10
    cors_origins: tuple[str, ...] = field(default=())
    metrics_port: int | None = None  # a worker serves its Prometheus metrics here; None: not
    # backpressure
    rate_limit: str = "100/second"  # per tenant, in the limits library's notation; "" = none
    max_open_tasks: int = 10_000  # per tenant: tasks pending or running
    max_schedules: int = 1000  # per tenant
    max_queue_depth: int = 100_000  # jobs waiting in the shared queue, all tenants
    # uploads and documents
    max_request_bytes: int = 512 * 1024 * 1024
    max_file_bytes: int = 100 * 1024 * 1024
    max_files: int = 200
    max_pages: int = 2000
    parse_processes: int = 2
    parse_timeout: float = 120.0  # one batch of pages; past it the parser is killed: `timeout`
    chunk_tokens: int = 200
    chunk_overlap: int = 40
    # providers: an OpenAI-compatible endpoint each, or the offline defaults when unset
    llm_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_timeout: float = 60.0
    llm_rate: str = ""  # requests to the LLM, shared by all workers, e.g. "500/minute"
    llm_token_rate: str = ""  # tokens to the LLM, likewise, e.g. "200000/minute"
    embed_url: str | None = None
    embed_api_key: str | None = None
    embed_model: str = "all-MiniLM-L6-v2"
    embed_batch: int = 32

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        settings = cls(
            database_url=reader.get("DATABASE_URL", str, None),
            redis_url=reader.get("REDIS_URL", str, None),
            port=reader.get("PORT", _port, 8000),
            data_dir=reader.get("LONGTASK_DATA_DIR", Path, Path(".data")),
            secret=reader.get("LONGTASK_SECRET", str, ""),
            kinds=reader.get("LONGTASK_KINDS", _csv, ()),
            queue_name=reader.get("LONGTASK_QUEUE", str, DEFAULT_QUEUE),
            worker_concurrency=reader.get("LONGTASK_WORKER_CONCURRENCY", _positive_int, 16),
            job_timeout=reader.get("LONGTASK_JOB_TIMEOUT", _positive_float, 3600.0),
            item_timeout=reader.get("LONGTASK_ITEM_TIMEOUT", _positive_float, 1800.0),
            webhook_url=reader.get("LONGTASK_WEBHOOK_URL", _url, None),
            lease_seconds=reader.get("LONGTASK_LEASE_SECONDS", _positive_float, 20.0),
            reaper_seconds=reader.get("LONGTASK_REAPER_SECONDS", _divisor_of_60, 5),
            shutdown_grace=reader.get("LONGTASK_SHUTDOWN_GRACE", _positive_float, 20.0),
            heartbeat_seconds=reader.get("LONGTASK_HEARTBEAT_SECONDS", _positive_float, 5.0),
            max_retries=reader.get("LONGTASK_MAX_RETRIES", _non_negative_int, 3),
            retry_delays=reader.get("LONGTASK_RETRY_DELAYS", _delays, (60.0, 120.0, 240.0)),
            retention_days=reader.get("LONGTASK_RETENTION_DAYS", _positive_float, 30.0),
            sse_ping_seconds=reader.get("LONGTASK_SSE_PING_SECONDS", _positive_float, 15.0),
            stream_token_ttl=reader.get("LONGTASK_STREAM_TOKEN_TTL", _positive_float, 600.0),
            max_params_bytes=reader.get("LONGTASK_MAX_PARAMS_BYTES", _positive_int, 256 * 1024),
            db_pool_min=reader.get("LONGTASK_DB_POOL_MIN", _non_negative_int, 1),
            db_pool_max=reader.get("LONGTASK_DB_POOL_MAX", _positive_int, 10),
            cors_origins=reader.get("LONGTASK_CORS_ORIGINS", _origins, ()),
            metrics_port=reader.get("LONGTASK_METRICS_PORT", _port, None),
            rate_limit=reader.get("LONGTASK_RATE_LIMIT", _rates, "100/second"),
            max_open_tasks=reader.get("LONGTASK_MAX_OPEN_TASKS", _positive_int, 10_000),
            max_schedules=reader.get("LONGTASK_MAX_SCHEDULES", _positive_int, 1000),
            max_queue_depth=reader.get("LONGTASK_MAX_QUEUE_DEPTH", _positive_int, 100_000),
            max_request_bytes=reader.get("LONGTASK_MAX_REQUEST_BYTES", _positive_int,
                                         512 * 1024 * 1024),
            max_file_bytes=reader.get("LONGTASK_MAX_FILE_BYTES", _positive_int, 100 * 1024 * 1024),
            max_files=reader.get("LONGTASK_MAX_FILES", _positive_int, 200),
            max_pages=reader.get("LONGTASK_MAX_PAGES", _positive_int, 2000),
            parse_processes=reader.get("LONGTASK_PARSE_PROCESSES", _positive_int,
                                       max(1, min(4, os.cpu_count() or 1))),
            parse_timeout=reader.get("LONGTASK_PARSE_TIMEOUT", _positive_float, 120.0),
            chunk_tokens=reader.get("LONGTASK_CHUNK_TOKENS", _positive_int, 200),
            chunk_overlap=reader.get("LONGTASK_CHUNK_OVERLAP", _non_negative_int, 40),
            llm_url=reader.get("LONGTASK_LLM_URL", _url, None),
            llm_api_key=reader.get("LONGTASK_LLM_API_KEY", str, None),
            llm_model=reader.get("LONGTASK_LLM_MODEL", str, "gpt-4o-mini"),
            llm_timeout=reader.get("LONGTASK_LLM_TIMEOUT", _positive_float, 60.0),
            llm_rate=reader.get("LONGTASK_LLM_RATE", _rate, ""),
            llm_token_rate=reader.get("LONGTASK_LLM_TOKEN_RATE", _rate, ""),
            embed_url=reader.get("LONGTASK_EMBED_URL", _url, None),
            embed_api_key=reader.get("LONGTASK_EMBED_API_KEY", str, None),
            embed_model=reader.get("LONGTASK_EMBED_MODEL", str, "all-MiniLM-L6-v2"),
            embed_batch=reader.get("LONGTASK_EMBED_BATCH", _positive_int, 32),
        )
        reader.raise_errors()
        if settings.heartbeat_seconds >= settings.lease_seconds:
            raise ConfigError(
                "LONGTASK_HEARTBEAT_SECONDS must be shorter than LONGTASK_LEASE_SECONDS "
                f"({settings.heartbeat_seconds} >= {settings.lease_seconds})"
            )
        if settings.job_timeout < 5:
            raise ConfigError("LONGTASK_JOB_TIMEOUT must be at least 5 seconds")
        if settings.item_timeout >= settings.job_timeout:
            raise ConfigError("LONGTASK_ITEM_TIMEOUT (soft) must be shorter than "
                              "LONGTASK_JOB_TIMEOUT (hard)")
        if settings.chunk_overlap >= settings.chunk_tokens:
            raise ConfigError("LONGTASK_CHUNK_OVERLAP must be smaller than LONGTASK_CHUNK_TOKENS")
        if settings.db_pool_min > settings.db_pool_max:
            raise ConfigError("LONGTASK_DB_POOL_MIN must not exceed LONGTASK_DB_POOL_MAX")
        return settings

    def retry_delay(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based); the last delay repeats."""
        delays = self.retry_delays or (0.0,)
        return delays[min(attempt, len(delays)) - 1]


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[str] = []

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except (ValueError, TypeError) as exc:
            self.errors.append(f"{name}={raw!r}: {exc}")
            return default

    def raise_errors(self) -> None:
        if self.errors:
            raise ConfigError("invalid environment: " + "; ".join(self.errors))


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("must be a port number between 1 and 65535")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be zero or a positive whole number")
    return value


def _divisor_of_60(raw: str) -> int:
    value = int(raw)
    if value <= 0 or 60 % value:
        raise ValueError("must be a whole number of seconds that divides 60 (1, 2, 3, 5, 10 ...)")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL, e.g. https://api.openai.com/v1")
    return raw.rstrip("/")


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _origins(raw: str) -> tuple[str, ...]:
    origins = _csv(raw)
    for origin in origins:
        if origin == "*":
            raise ValueError("name the origins; a wildcard would let any site use the API")
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise ValueError(f"{origin!r} is not an origin such as https://app.example.com")
    return origins


def _rates(raw: str) -> str:
    if raw.lower() in ("off", "none", "0"):
        return ""
    from limits import parse_many  # only here and in the web process

    parse_many(raw)  # ValueError for anything it cannot read
    return raw


def _rate(raw: str) -> str:
    from limits import parse

    parse(raw)  # one limit, e.g. 500/minute; ValueError for anything else
    return raw


def _delays(raw: str) -> tuple[float, ...]:
    values = tuple(float(part) for part in _csv(raw))
    if not values or any(v < 0 for v in values):
        raise ValueError("must be a comma-separated list of non-negative seconds, e.g. 60,120,240")
    return values


def require_services(settings: Settings) -> tuple[str, str]:
    """The Postgres and Redis URLs a web or worker process runs on; ConfigError naming the
    variable that is unset (`longtask dev` and the Procfile's entry points fill them in)."""
    for name, value in (("DATABASE_URL", settings.database_url),
                        ("REDIS_URL", settings.redis_url)):
        if not value:
            raise ConfigError(f"{name} is not set: point it at your "
                              f"{'PostgreSQL (with pgvector)' if name == 'DATABASE_URL' else 'Redis'}"
                              ", or run `longtask dev` for embedded ones")
    assert settings.database_url and settings.redis_url
    return settings.database_url, settings.redis_url
