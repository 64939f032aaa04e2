"""Prometheus metrics: one registry per process, made by `create_app` or `worker_settings`.

Web (`GET /metrics`): tasks by kind and status, queue depth, workers alive and open event
streams, read when scraped (a source that fails is left out and flagged in
`longtask_scrape_error`), and HTTP requests by route template.
Worker (`LONGTASK_METRICS_PORT`): items by kind and outcome with their durations, LLM and
embedding call latency, and provider retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
_ITEM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)


@dataclass(frozen=True)
class Snapshot:
    """What the web process read at scrape time; None: that source failed."""

    tasks: list[tuple[str, str, int]] | None
    queue_depth: int | None
    workers_alive: int | None
    sse_connections: int


class WebMetrics:
    """The web process's registry: request counters, and the figures read at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "longtask_http_requests", "HTTP requests answered, by route template",
            ["method", "route", "status"], registry=self.registry)
        self._seconds = Histogram(
            "longtask_http_request_seconds", "Time to answer (a stream: its whole life)",
            ["method", "route"], registry=self.registry)
        self._scraped = _Scraped()
        self.registry.register(self._scraped)

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.labels(method, route, str(status)).inc()
        self._seconds.labels(method, route).observe(seconds)

    def render(self, snapshot: Snapshot) -> bytes:
        """The exposition text, with `snapshot` as the scrape-time figures (no await between
        setting and rendering, so concurrent scrapes never mix)."""
        self._scraped.snapshot = snapshot
        return generate_latest(self.registry)


class WorkerMetrics:
    """A worker process's registry; also the pipeline's `CallObserver`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._item_seconds = Histogram(
            "longtask_item_seconds", "Time one run of an item took, by kind and outcome",
            ["kind", "outcome"], buckets=_ITEM_BUCKETS, registry=self.registry)
        self._items = Counter(
            "longtask_items", "Item runs, by kind and outcome", ["kind", "outcome"],
            registry=self.registry)
        self._llm_seconds = Histogram(
            "longtask_llm_seconds", "One LLM call attempt, failed ones included",
            buckets=_CALL_BUCKETS, registry=self.registry)
        self._embed_seconds = Histogram(
            "longtask_embed_seconds", "One embeddings call attempt, failed ones included",
            buckets=_CALL_BUCKETS, registry=self.registry)
        self._retries = Counter(
            "longtask_provider_retries", "Provider calls retried after a transient error",
            ["provider"], registry=self.registry)

    def item_done(self, kind: str, outcome: str, seconds: float) -> None:
        self._items.labels(kind, outcome).inc()
        self._item_seconds.labels(kind, outcome).observe(seconds)

    def attempted(self, service: str, seconds: float) -> None:
        histogram = {"llm": self._llm_seconds, "embeddings": self._embed_seconds}.get(service)
        if histogram is not None:
            histogram.observe(seconds)

    def retried(self, service: str) -> None:
        self._retries.labels(service).inc()

    def serve(self, port: int) -> Callable[[], None]:
        """Serve the registry on `port` (all interfaces) from a thread; returns how to stop.
        A port already taken is logged, not fatal: the worker's work matters more."""
        try:
            server, thread = start_http_server(port, registry=self.registry)
        except OSError as exc:
            log.warning("metrics not served: port %d: %s", port, exc)
            return lambda: None
        log.info("metrics on port %d", port)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        return stop


class _Scraped(Collector):
    def __init__(self) -> None:
        self.snapshot = Snapshot(None, None, None, 0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.snapshot
        if snap.tasks is not None:
            tasks = GaugeMetricFamily("longtask_tasks", "Tasks by kind and status, all tenants",
                                      labels=["kind", "status"])
            for kind, status, count in snap.tasks:
                tasks.add_metric([kind, status], count)
            yield tasks
        if snap.queue_depth is not None:
            yield GaugeMetricFamily("longtask_queue_depth", "Item jobs waiting in the queue",
                                    value=snap.queue_depth)
        if snap.workers_alive is not None:
            yield GaugeMetricFamily("longtask_workers_alive", "Workers with a live heartbeat",
                                    value=snap.workers_alive)
        yield GaugeMetricFamily("longtask_sse_connections",
                                "Event streams open on this web process",
                                value=snap.sse_connections)
        errors = GaugeMetricFamily("longtask_scrape_error",
                                   "1 when a source could not be read for this scrape",
                                   labels=["source"])
        errors.add_metric(["postgres"], 1 if snap.tasks is None else 0)
        errors.add_metric(["redis"], 1 if snap.queue_depth is None
                          or snap.workers_alive is None else 0)
        yield errors
