"""Prometheus metrics: one registry per process, made by `create_app` or `worker_settings`.

Web (`GET /metrics`): tasks by kind and status, queue depth and workers alive, read when scraped
(a source that fails is left out and flagged in `longtask_scrape_error`), HTTP requests by route
template and open event streams.

Several web processes on one machine (uvicorn `--workers N`, which Heroku's `WEB_CONCURRENCY`
sets) add up through prometheus_client's multiprocess mode: `prepare_multiprocess`, called where
uvicorn is started, gives them one `PROMETHEUS_MULTIPROC_DIR`; each process writes its counters
there and any process's /metrics merges them all. Without the variable a process keeps its
metrics in memory, as one process should.

Worker: items by kind and outcome with their durations, LLM and embedding call latency, and
provider retries. A worker publishes them to Redis every `LONGTASK_METRICS_PUSH_SECONDS`
(`WorkerMetrics.dump`), and every web process's /metrics serves what each live worker published,
labelled `worker` (`published_families`): a worker dyno takes no inbound connection. With
`LONGTASK_METRICS_PORT` a worker serves them on that port instead, for a Prometheus that can
reach it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from longtask.obs import multiprocess
from longtask.obs.multiprocess import MULTIPROC_DIR as MULTIPROC_DIR
from longtask.obs.multiprocess import prepare_multiprocess as prepare_multiprocess

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
_ITEM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
_REQUESTS, _REQUEST_SECONDS, _STREAMS = (
    "longtask_http_requests", "longtask_http_request_seconds", "longtask_sse_connections")


@dataclass(frozen=True)
class Snapshot:
    """What the web process read at scrape time; None: that source failed."""

    tasks: list[tuple[str, str, int]] | None
    queue_depth: int | None
    workers_alive: int | None
    published: Mapping[str, str | bytes] | None  # worker id -> `WorkerMetrics.dump()`


class WebMetrics:
    """The web process's metrics: request counters, open streams, and the figures read at each
    scrape; with the other web processes' counters added in multiprocess mode."""

    def __init__(self) -> None:
        self._shared_dir = multiprocess.directory()
        own = None if self._shared_dir else CollectorRegistry()
        self._requests = Counter(
            _REQUESTS, "HTTP requests answered, by route template",
            ["method", "route", "status"], registry=own)
        self._seconds = Histogram(
            _REQUEST_SECONDS, "Time to answer (a stream: its whole life)",
            ["method", "route"], registry=own)
        self._streams = Gauge(
            _STREAMS, "Event streams (SSE and WebSocket) open",
            multiprocess_mode="livesum", registry=own)
        self._streams.set(0)  # a reused pid's file may hold a dead process's figure
        self.registry = own or CollectorRegistry()
        if self._shared_dir:
            self.registry.register(multiprocess.SharedCollector(
                self._shared_dir, {_REQUESTS, _REQUEST_SECONDS, _STREAMS}))
        self._scraped = _Scraped()
        self.registry.register(self._scraped)

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        self._requests.labels(method, route, str(status)).inc()
        self._seconds.labels(method, route).observe(seconds)

    def streams_open(self, count: int) -> None:
        self._streams.set(count)

    def render(self, snapshot: Snapshot) -> bytes:
        """The exposition text, with `snapshot` as the scrape-time figures (no await between
        setting and rendering, so concurrent scrapes never mix)."""
        if self._shared_dir:
            multiprocess.forget_dead_processes(self._shared_dir)
        self._scraped.snapshot = snapshot
        return generate_latest(self.registry)

    def close(self) -> None:
        """This process is stopping: its open streams no longer count (its counters still do)."""
        if self._shared_dir:
            multiprocess.mark_dead(os.getpid(), self._shared_dir)


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
        self._webhooks = Counter(
            "longtask_webhook_attempts",
            "Webhook attempts, by outcome: delivered, retrying, failed (the last one, given up)",
            ["outcome"], registry=self.registry)
        self._webhook_seconds = Histogram(
            "longtask_webhook_seconds", "One webhook attempt, failed ones included",
            buckets=_CALL_BUCKETS, registry=self.registry)

    def item_done(self, kind: str, outcome: str, seconds: float) -> None:
        self._items.labels(kind, outcome).inc()
        self._item_seconds.labels(kind, outcome).observe(seconds)

    def attempted(self, service: str, seconds: float) -> None:
        histogram = {"llm": self._llm_seconds, "embeddings": self._embed_seconds}.get(service)
        if histogram is not None:
            histogram.observe(seconds)

    def retried(self, service: str) -> None:
        self._retries.labels(service).inc()

    def webhook_attempted(self, outcome: str, seconds: float) -> None:
        self._webhooks.labels(outcome).inc()
        self._webhook_seconds.observe(seconds)

    def dump(self) -> str:
        """Every family and sample of the registry as JSON, for `published_families` in a web
        process: the same families, `_bucket`/`_sum`/`_count`/`_created` samples and all."""
        return json.dumps([
            {"name": family.name, "help": family.documentation, "type": family.type,
             "unit": family.unit,
             "samples": [[s.name, s.labels, s.value] for s in family.samples]}
            for family in self.registry.collect()])

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


def published_families(published: Mapping[str, str | bytes]) -> list[Metric]:
    """The families the workers published (worker id -> `WorkerMetrics.dump()`), each of their
    samples labelled with its `worker`; one family per name over all workers. What cannot be
    read (another version's format, a type that differs) is left out and logged."""
    families: dict[str, Metric] = {}
    for worker, raw in sorted(published.items()):
        try:
            dumped = [(Metric(d["name"], d["help"], d["type"], d["unit"]),
                       [(str(name), dict(labels), float(value))
                        for name, labels, value in d["samples"]])
                      for d in json.loads(raw)]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("/metrics: worker %s published what cannot be read: %r", worker, exc)
            continue
        for family, samples in dumped:
            merged = families.setdefault(family.name, family)
            if merged.type != family.type:
                log.warning("/metrics: worker %s has %s as a %s, not a %s; left out",
                            worker, family.name, family.type, merged.type)
                continue
            for name, labels, value in samples:
                merged.add_sample(name, {**labels, "worker": worker}, value)
    return list(families.values())


class _Scraped(Collector):
    def __init__(self) -> None:
        self.snapshot = Snapshot(None, None, None, None)

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        if snap.tasks is not None:
            tasks = GaugeMetricFamily("longtask_tasks", "Tasks by kind and status, all tenants",
                                      labels=["kind", "status"])
            for kind, status, count in snap.tasks:
                tasks.add_metric([kind, status], count)
            yield tasks
        if snap.queue_depth is not None:
            yield GaugeMetricFamily("longtask_queue_depth",
                                    "Item jobs waiting their turn or on the ARQ queue",
                                    value=snap.queue_depth)
        if snap.workers_alive is not None:
            yield GaugeMetricFamily("longtask_workers_alive", "Workers with a live heartbeat",
                                    value=snap.workers_alive)
        if snap.published is not None:
            yield from published_families(snap.published)
        errors = GaugeMetricFamily("longtask_scrape_error",
                                   "1 when a source could not be read for this scrape",
                                   labels=["source"])
        errors.add_metric(["postgres"], 1 if snap.tasks is None else 0)
        errors.add_metric(["redis"], 1 if snap.queue_depth is None or snap.workers_alive is None
                          or snap.published is None else 0)
        yield errors
