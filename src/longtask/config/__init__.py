"""One frozen `Settings`, read from the environment once by `server.py`, `worker.py` or the CLI.

Each variable is declared once, as a field of `Settings` below: its environment name, the parser
of its text (so its type), its default and one line of help (see `var.setting`). The dataclass
default, `from_env` and the README's table (`python -m longtask.config --markdown README.md`) all
come from that declaration. Every variable is parsed and checked here, so a typo fails at start
with a message naming the variable, never deep inside a request.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from longtask.config import parse
from longtask.config.var import Computed, Var, read_set, setting
from longtask.core.errors import ConfigError

__all__ = ["CLIENT", "DEFAULT_QUEUE", "Computed", "Settings", "Var", "markdown", "read",
           "require_services", "variables"]

DEFAULT_QUEUE = "longtask:queue"
TRIAL_KINDS = "longtask.kinds.trial"  # demo and noop, for trying things out
MIN_PARSE_MEMORY_MB = 256


def _cores_up_to_4() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Settings:
    """Everything a process is configured with; see `Var` and the README's table."""

    database_url: str | None = setting(
        "DATABASE_URL", str, None, shown="embedded",
        help="Postgres with pgvector; `postgres://` and `postgresql://` both work")
    redis_url: str | None = setting(
        "REDIS_URL", str, None, shown="embedded",
        help="`redis://`, `rediss://` (self-signed certificates accepted unless "
             "`?ssl_cert_reqs=required`), `unix://`, or through Sentinel: "
             "`redis+sentinel://[:password@]host:26379[,host2:26379...]/mymaster[/db]` "
             "(`rediss+sentinel://` for TLS; `?sentinel_password=` if the Sentinels ask for one)")
    port: int = setting("PORT", parse.port, 8000, "web port")
    kinds: tuple[str, ...] = setting(
        "LONGTASK_KINDS", parse.csv, (), "modules with your job kinds, comma-separated")
    trial_kinds: bool = setting(
        "LONGTASK_TRIAL_KINDS", parse.flag, False,
        "`1`: the kinds for trying longtask out, `demo` and `noop`, are on (`longtask dev`, "
        "`demo` and LONGTASK_EMBEDDED=1 turn them on)")
    worker_concurrency: int = setting(
        "LONGTASK_WORKER_CONCURRENCY", parse.positive_int, 16, "items one worker runs at once")
    job_timeout: float = setting(
        "LONGTASK_JOB_TIMEOUT", parse.positive_float, 3600.0,
        "ARQ's hard limit for one item, seconds")
    item_timeout: float = setting(
        "LONGTASK_ITEM_TIMEOUT", parse.positive_float, 1800.0,
        "the soft limit: the item is stopped, cleaned up and fails as `timeout` "
        "(a kind may set its own)")
    lease_seconds: float = setting(
        "LONGTASK_LEASE_SECONDS", parse.positive_float, 20.0, "a running item's lease, seconds")
    heartbeat_seconds: float = setting(
        "LONGTASK_HEARTBEAT_SECONDS", parse.positive_float, 5.0,
        "how often the lease is renewed (shorter than the lease)")
    reaper_seconds: int = setting(
        "LONGTASK_REAPER_SECONDS", parse.divisor_of_60, 5,
        "how often expired leases go to another worker (and deadlines are checked)")
    shutdown_grace: float = setting(
        "LONGTASK_SHUTDOWN_GRACE", parse.positive_float, 20.0,
        "on SIGTERM, running items get this long to finish; then they are handed back")
    # webhooks
    webhook_url: str | None = setting(
        "LONGTASK_WEBHOOK_URL", parse.url, None,
        "POSTed `task.completed`, `task.failed` or `task.canceled` when a task ends, signed "
        "(Standard Webhooks; see Webhooks); needs `LONGTASK_WEBHOOK_SECRET`")
    webhook_secrets: tuple[str, ...] = setting(
        "LONGTASK_WEBHOOK_SECRET", parse.words, (),
        help="signs webhooks: `whsec_` and 24 to 64 random bytes in base64; several, "
             "space-separated, each sign (to rotate). Set with the URL, or nothing starts")
    webhook_timeout: float = setting(
        "LONGTASK_WEBHOOK_TIMEOUT", parse.positive_float, 10.0,
        "seconds a receiver has to answer one webhook attempt")
    webhook_retry_delays: tuple[float, ...] = setting(
        "LONGTASK_WEBHOOK_RETRY_DELAYS", parse.delays, (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0),
        "seconds before each retry of a webhook (±20% jitter), comma-separated; the last one "
        "repeats")
    webhook_attempts: int = setting(
        "LONGTASK_WEBHOOK_ATTEMPTS", parse.positive_int, 8,
        "attempts at one webhook; then it is marked failed, logged and counted")
    max_retries: int = setting(
        "LONGTASK_MAX_RETRIES", parse.non_negative_int, 3, "retries of transient errors")
    retry_delays: tuple[float, ...] = setting(
        "LONGTASK_RETRY_DELAYS", parse.delays, (60.0, 120.0, 240.0),
        "seconds before each retry, comma-separated; the last one repeats")
    retention_days: float = setting(
        "LONGTASK_RETENTION_DAYS", parse.positive_float, 30.0, "ended tasks are deleted after this")
    sse_ping_seconds: float = setting(
        "LONGTASK_SSE_PING_SECONDS", parse.positive_float, 15.0,
        "keep-alive pings on event streams, seconds")
    stream_token_ttl: float = setting(
        "LONGTASK_STREAM_TOKEN_TTL", parse.positive_float, 600.0,
        "lifetime of a stream token, seconds")
    secret: str = setting(
        "LONGTASK_SECRET", str, "", shown="kept in Postgres",
        help="signs stream tokens; unset, one is made and kept in Postgres")
    cors_origins: tuple[str, ...] = setting(
        "LONGTASK_CORS_ORIGINS", parse.origins, (),
        "origins allowed to call the API from a browser, e.g. `https://app.example.com` "
        "(a wildcard is refused)")
    # backpressure
    rate_limit: str = setting(
        "LONGTASK_RATE_LIMIT", parse.rates, "100/second",
        "requests per tenant, shared by all web processes (`10/second;500/minute`; `off`); "
        "past it: 429 + `Retry-After`")
    max_open_tasks: int = setting(
        "LONGTASK_MAX_OPEN_TASKS", parse.positive_int, 10_000,
        "tasks a tenant may have pending or running; past it: 429 + `Retry-After`")
    max_schedules: int = setting(
        "LONGTASK_MAX_SCHEDULES", parse.positive_int, 1000,
        "schedules a tenant may have; past it: 429")
    max_queue_depth: int = setting(
        "LONGTASK_MAX_QUEUE_DEPTH", parse.positive_int, 100_000,
        "item jobs waiting or running, all tenants; past it submits get 503 + `Retry-After`")
    max_streams: int = setting(
        "LONGTASK_MAX_STREAMS", parse.positive_int, 1000,
        "event streams (SSE and WebSocket together) a tenant may have open, counted across all "
        "web processes; past it: 429 + `Retry-After` (an `EventSource`: a `retry:` to come back)")
    stream_rate: str = setting(
        "LONGTASK_STREAM_RATE", parse.rates, "1000/minute",
        "stream connects per tenant, counted apart from `LONGTASK_RATE_LIMIT` (`off`); past it "
        "as past `LONGTASK_MAX_STREAMS`")
    max_tenant_bytes: int = setting(
        "LONGTASK_MAX_TENANT_BYTES", parse.positive_int, 10 * 1024**3,
        "bytes of uploaded files a tenant may keep (each distinct file once); a file that does "
        "not fit fails as `quota_exceeded`, an upload when it is full gets 429")
    max_metadata_bytes: int = setting(
        "LONGTASK_MAX_METADATA_BYTES", parse.positive_int, 16 * 1024,
        "an upload's `metadata` as JSON (413 past it), and a document's after re-uploads merge "
        "theirs in (that file fails as `metadata_too_large`)")
    min_schedule_seconds: int = setting(
        "LONGTASK_MIN_SCHEDULE_SECONDS", parse.positive_int, 60,
        "the shortest time between two firings of a schedule (422 for a cron more frequent)")
    tenant_queue_depth: int = setting(
        "LONGTASK_TENANT_QUEUE_DEPTH", parse.positive_int, 10_000,
        "item jobs one tenant may have waiting or running; past it that tenant's submits get "
        "429 + `Retry-After`, and other tenants' go on")
    # fair dispatch across tenants (broker/fair.py)
    tenant_concurrency: int = setting(
        "LONGTASK_TENANT_CONCURRENCY", parse.non_negative_int, 32,
        "items one tenant may have started or about to start, over the whole fleet; its other "
        "items wait their turn (`0`: no cap)")
    kind_concurrency: tuple[tuple[str, int], ...] = setting(
        "LONGTASK_KIND_CONCURRENCY", parse.kind_caps, (),
        "caps of their own for some kinds, per tenant and within its cap, e.g. "
        "`ingest=4,agent=2` (unset: none)")
    fair_dispatch: bool = setting(
        "LONGTASK_FAIR_DISPATCH", parse.flag, True,
        "`0`: item jobs go straight onto the one ARQ queue, first come first served, as before "
        "fair dispatch (no tenant caps, no turns, no tenant queue depth)")
    # providers: an OpenAI-compatible endpoint each, or the offline defaults when unset
    llm_url: str | None = setting(
        "LONGTASK_LLM_URL", parse.url, None, shown="offline",
        help="an OpenAI-compatible chat endpoint, e.g. `https://api.openai.com/v1`; "
             "unset: extractive summaries")
    llm_api_key: str | None = setting("LONGTASK_LLM_API_KEY", str, None, "the LLM endpoint's key")
    llm_model: str = setting("LONGTASK_LLM_MODEL", str, "gpt-4o-mini", "the LLM's model name")
    llm_timeout: float = setting(
        "LONGTASK_LLM_TIMEOUT", parse.positive_float, 60.0, "seconds for one LLM call")
    llm_rate: str = setting(
        "LONGTASK_LLM_RATE", parse.rate, "", shown="none",
        help="requests to the LLM, shared by all workers, e.g. `500/minute`")
    llm_token_rate: str = setting(
        "LONGTASK_LLM_TOKEN_RATE", parse.rate, "", shown="none",
        help="tokens to the LLM, shared by all workers, e.g. `200000/minute`")
    embed_url: str | None = setting(
        "LONGTASK_EMBED_URL", parse.url, None, shown="offline",
        help="an OpenAI-compatible `/embeddings` endpoint; unset: the local model in the workers")
    embed_api_key: str | None = setting(
        "LONGTASK_EMBED_API_KEY", str, None, "the embeddings endpoint's key")
    embed_model: str = setting(
        "LONGTASK_EMBED_MODEL", str, "all-MiniLM-L6-v2", "the embedding model's name")
    embed_batch: int = setting(
        "LONGTASK_EMBED_BATCH", parse.positive_int, 32, "chunks per embedding call")
    embed_window: int = setting(
        "LONGTASK_EMBED_WINDOW", parse.positive_int, 8191,
        "tokens the endpoint's model reads in one input (counted with tiktoken); the local "
        "model's is its own (256)")
    # uploads and documents
    chunk_tokens: int = setting(
        "LONGTASK_CHUNK_TOKENS", parse.positive_int, 256,
        "chunk size in the embedding model's tokens (never over its window)")
    chunk_overlap: int = setting(
        "LONGTASK_CHUNK_OVERLAP", parse.non_negative_int, 40,
        "tokens shared by neighbouring chunks (fewer than the chunk size)")
    max_request_bytes: int = setting(
        "LONGTASK_MAX_REQUEST_BYTES", parse.positive_int, 512 * 1024 * 1024,
        "the largest upload request (413 past it)")
    max_file_bytes: int = setting(
        "LONGTASK_MAX_FILE_BYTES", parse.positive_int, 100 * 1024 * 1024,
        "the largest file in an upload (typed `too_large` past it)")
    max_files: int = setting(
        "LONGTASK_MAX_FILES", parse.positive_int, 200, "files in one upload (422 past it)")
    max_pages: int = setting(
        "LONGTASK_MAX_PAGES", parse.positive_int, 2000, "longer PDFs end as `too_many_pages`")
    parse_processes: int = setting(
        "LONGTASK_PARSE_PROCESSES", parse.positive_int,
        Computed(_cores_up_to_4, "cores, at most 4"),
        "PyMuPDF parser processes per worker")
    parse_timeout: float = setting(
        "LONGTASK_PARSE_TIMEOUT", parse.positive_float, 300.0,
        "seconds of parsing per file, all its pages (and re-runs) together; past it the one "
        "parser process on that file is killed and the file fails as `timeout` (decompression "
        "bombs); other files go on")
    parse_memory_mb: int = setting(
        "LONGTASK_PARSE_MEMORY_MB", parse.positive_int, 1024,
        "memory of each parser process, MB (its address space; at least 256); a file that needs "
        "more fails alone as `too_large`")
    max_document_chars: int = setting(
        "LONGTASK_MAX_DOCUMENT_CHARS", parse.positive_int, 10_000_000,
        "characters of text in one document (a page's are cut at 200,000); a file with more "
        "fails as `too_large`, nothing of it indexed")
    # the processes themselves
    queue_name: str = setting("LONGTASK_QUEUE", str, DEFAULT_QUEUE, "the ARQ queue name")
    embedded: bool = setting(
        "LONGTASK_EMBEDDED", parse.flag, False,
        "`1`: start embedded Postgres and Redis for `DATABASE_URL` / `REDIS_URL` left unset "
        "(`longtask dev`, `demo` and the tests do it without); otherwise a process without them "
        "exits at once, naming the variable")
    data_dir: Path = setting(
        "LONGTASK_DATA_DIR", Path, Path(".data"), "where the embedded services live")
    web_concurrency: int = setting(
        "WEB_CONCURRENCY", parse.positive_int, 1,
        "web processes `longtask web` runs on its port (Heroku sets it by dyno size)")
    pg_fast: bool = setting(
        "LONGTASK_PG_FAST", parse.flag, False,
        "`1` (the tests set it): the embedded Postgres runs without fsync")
    db_pool_min: int = setting(
        "LONGTASK_DB_POOL_MIN", parse.non_negative_int, 1,
        "Postgres connections a process keeps open")
    db_pool_max: int = setting(
        "LONGTASK_DB_POOL_MAX", parse.positive_int, 10, "Postgres connections a process may open")
    submit_batch: int = setting(
        "LONGTASK_SUBMIT_BATCH", parse.positive_int, 10,
        "submits that arrive while a commit is in flight share the next one, up to this many "
        "(one WAL flush for all, each answered once its rows are durable); `1`: each commits "
        "alone")
    db_statement_cache: int = setting(
        "LONGTASK_DB_STATEMENT_CACHE", parse.non_negative_int, 100,
        "prepared statements each Postgres connection keeps; `0` behind a pooler in transaction "
        "mode (PgBouncer before 1.21, or without `max_prepared_statements`)")
    max_params_bytes: int = setting(
        "LONGTASK_MAX_PARAMS_BYTES", parse.positive_int, 256 * 1024,
        "the largest `POST /tasks` body (413 past it)")
    metrics_token: str | None = setting(
        "LONGTASK_METRICS_TOKEN", str, None, shown="off",
        help="`/metrics` answers only a scrape with `Authorization: Bearer <this>`; unset: "
             "`/metrics` is off (404)")
    metrics_refresh_seconds: float = setting(
        "LONGTASK_METRICS_REFRESH_SECONDS", parse.non_negative_float, 10.0,
        "`/metrics` reads tasks by kind and status, the queue and the workers at most this "
        "often per web process, however often it is scraped")
    metrics_port: int | None = setting(
        "LONGTASK_METRICS_PORT", parse.port, None,
        "a worker serves its Prometheus metrics on this port (all interfaces) instead of "
        "publishing them through Redis to every web process's `/metrics`")
    metrics_push_seconds: float = setting(
        "LONGTASK_METRICS_PUSH_SECONDS", parse.positive_float, 5.0,
        "how often a worker publishes its metrics through Redis (and once as it stops)")
    metrics_ttl: float = setting(
        "LONGTASK_METRICS_TTL", parse.positive_float, 120.0,
        "a worker's metrics stay on `/metrics` this long after it last published them, seconds "
        "(longer than a scrape interval, so a stopped worker's final counts are scraped)")
    log_level: str = setting("LOG_LEVEL", parse.log_level, "INFO", "the lowest level logged")
    log_format: str = setting(
        "LOG_FORMAT", parse.log_format, "text",
        "`text` for people; `json`: one JSON object per line, with `request_id`, `task_id`, "
        "`item_id`")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(**read_set(_fields(cls), env))  # what is unset keeps the field's default
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
        if settings.metrics_ttl <= settings.metrics_push_seconds:
            raise ConfigError("LONGTASK_METRICS_TTL must be longer than "
                              "LONGTASK_METRICS_PUSH_SECONDS")
        if settings.parse_memory_mb < MIN_PARSE_MEMORY_MB:
            raise ConfigError(f"LONGTASK_PARSE_MEMORY_MB must be at least {MIN_PARSE_MEMORY_MB} "
                              "(a parser process needs about 150 MB before it opens a file)")
        if settings.db_pool_min > settings.db_pool_max:
            raise ConfigError("LONGTASK_DB_POOL_MIN must not exceed LONGTASK_DB_POOL_MAX")
        _check_webhook(settings)
        return settings

    @property
    def kind_modules(self) -> tuple[str, ...]:
        """The modules whose kinds this deployment runs, beside the built-in ones."""
        trial = (TRIAL_KINDS,) if self.trial_kinds or self.embedded else ()
        return (*trial, *self.kinds)

    def retry_delay(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based); the last delay repeats."""
        delays = self.retry_delays or (0.0,)
        return delays[min(attempt, len(delays)) - 1]

    def webhook_retry_delay(self, attempt: int) -> float:
        """Delay before a webhook's retry number `attempt` (1-based); the last delay repeats."""
        delays = self.webhook_retry_delays or (0.0,)
        return delays[min(attempt, len(delays)) - 1]


def require_services(settings: Settings) -> tuple[str, str]:
    """The Postgres and Redis URLs a web or worker process runs on; ConfigError naming the
    variable that is unset (`longtask dev` and `LONGTASK_EMBEDDED=1` fill them in)."""
    for name, value in (("DATABASE_URL", settings.database_url),
                        ("REDIS_URL", settings.redis_url)):
        if not value:
            what = "PostgreSQL with pgvector" if name == "DATABASE_URL" else "Redis"
            raise ConfigError(f"{name} is not set: point it at your {what}; on one machine, "
                              "`longtask dev` or LONGTASK_EMBEDDED=1 start embedded ones")
    assert settings.database_url and settings.redis_url
    return settings.database_url, settings.redis_url


def _check_webhook(settings: Settings) -> None:
    """A webhook URL needs a secret (an unsigned webhook is one anybody can forge), and each
    secret must be one a receiver's Standard Webhooks library reads. The messages never show a
    secret."""
    make_one = ("make one with: python -c \"import base64, os; "
                "print('whsec_' + base64.b64encode(os.urandom(32)).decode())\"")
    if settings.webhook_url and not settings.webhook_secrets:
        raise ConfigError("LONGTASK_WEBHOOK_URL is set but LONGTASK_WEBHOOK_SECRET is not: "
                          "webhooks are signed, and the receiver checks them with the same "
                          f"secret; {make_one}")
    for n, secret in enumerate(settings.webhook_secrets, 1):
        try:
            parse.webhook_secret(secret)
        except ValueError as exc:
            raise ConfigError(f"LONGTASK_WEBHOOK_SECRET (secret {n}): {exc}; {make_one}") from None


# Read by `longtask.client`, which imports nothing server-side: declared here so that the README's
# table is whole; the client reads them itself (and a test checks it keeps to this default).
CLIENT: tuple[Var[Any], ...] = (
    Var("LONGTASK_URL", str, "http://127.0.0.1:8000", "the client and CLI: the server to call"),
    Var("LONGTASK_API_KEY", str, None, "the client and CLI: the API key they send"),
)


def variables() -> dict[str, Var[Any]]:
    """Every declared variable by name, in the README's order."""
    return {var.env: var for _, var in _fields(Settings)} | {var.env: var for var in CLIENT}


def read(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One declared variable's value, for code that runs without a `Settings` handed to it."""
    var = variables()[name]
    values = read_set([(name, var)], os.environ if environ is None else environ)
    return values[name] if name in values else var.value()


def markdown() -> str:
    """The README's environment table, one row per declared variable."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [var.row() for var in variables().values()]
    return "\n".join(rows) + "\n"


def _fields(cls: type[Settings]) -> Iterator[tuple[str, Var[Any]]]:
    for f in fields(cls):
        yield f.name, f.metadata["var"]
