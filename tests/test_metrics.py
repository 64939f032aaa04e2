"""/metrics on the web process and a worker's metrics port, read the way Prometheus reads them,
against real processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from longtask.broker import keys as redis_keys
from longtask.dev.embedded import free_port
from longtask.obs.metrics import (
    MULTIPROC_DIR,
    WorkerMetrics,
    prepare_multiprocess,
    published_families,
)
from longtask.testing.fake_openai import FakeOpenAI
from tests.conftest import Services, Tenant
from tests.jobs.test_ingest import ingest, sample_files
from tests.support import (
    METRICS_TOKEN,
    ROOT,
    Web,
    Worker,
    fake_providers,
    sse_events,
    wait_for,
    wait_status,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient() as client:  # the scraper's token, no tenant's key
        response = await client.get(url, timeout=10,
                                    headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def total(samples: Samples, name: str) -> float:
    """`name` summed over all its label sets."""
    return sum(v for (n, _), v in samples.items() if n == name)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for n, labels in samples if n == name and label in dict(labels)}


async def test_metrics_answer_only_the_scrapers_token(make_stack: Any, web: Web,
                                                      tenant_a: Tenant) -> None:
    """/metrics names every tenant's kinds and counts: never for anyone on the public port."""
    async with httpx.AsyncClient(base_url=web.url) as anon:
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Bearer {tenant_a.key}"},  # a tenant's key is not it
                        {"Authorization": f"Basic {METRICS_TOKEN}"}):
            refused = await anon.get("/metrics", headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"] == "invalid_metrics_token"
        assert "longtask_" not in refused.text
    off = await make_stack(LONGTASK_METRICS_TOKEN="")
    async with httpx.AsyncClient(base_url=off.web.url) as anon:
        answer = await anon.get("/metrics",
                                headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert answer.status_code == 404
    assert "LONGTASK_METRICS_TOKEN" in answer.json()["detail"]


async def test_scrapes_read_the_figures_at_most_once_per_refresh(make_stack: Any) -> None:
    """However often it is scraped, a web process reads tasks, queue and workers once per
    LONGTASK_METRICS_REFRESH_SECONDS: a task submitted after a scrape shows only later."""
    stack = await make_stack(LONGTASK_METRICS_REFRESH_SECONDS="3600")
    url = f"{stack.web.url}/metrics"
    before = await asyncio.gather(*(scrape(url) for _ in range(20)))  # one read among them
    task_id = (await stack.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    await wait_status(stack.client, task_id, {"completed"})
    after = await scrape(url)
    for found in [*before, after]:
        assert total(found, "longtask_tasks") == 0  # the figures of the first read
    # the requests themselves are counted as they happen
    assert total(after, "longtask_http_requests_total") > total(before[0],
                                                                "longtask_http_requests_total")


async def test_metrics_count_a_finished_task_and_requests_by_route_template(
        tenant_a: Tenant, live_worker: Worker, web: Web) -> None:
    task_id = (await tenant_a.client.post(
        "/tasks", json={"kind": "test.echo", "params": {}})).json()["id"]
    await wait_status(tenant_a.client, task_id, {"completed"})
    assert (await tenant_a.client.get(f"/tasks/{uuid.uuid4()}")).status_code == 404

    found = await scrape(f"{web.url}/metrics")
    assert value(found, "longtask_tasks", kind="test.echo", status="completed") == 1.0
    assert ("longtask_tasks", frozenset({"kind": "test.echo", "status": "pending"}.items())) \
        not in found  # only what there is
    requests = "longtask_http_requests_total"
    assert value(found, requests, method="POST", route="/tasks", status="202") >= 1
    assert value(found, requests, method="GET", route="/tasks/{id}", status="200") >= 1
    assert value(found, requests, method="GET", route="/tasks/{id}", status="404") >= 1
    assert value(found, "longtask_http_request_seconds_count",
                 method="GET", route="/tasks/{id}") >= 2
    routes = {dict(labels).get("route") for name, labels in found if name == requests}
    assert not any(task_id in str(route) for route in routes)  # templates, never raw paths
    assert value(found, "longtask_workers_alive") >= 1
    assert value(found, "longtask_queue_depth") == 0
    assert value(found, "longtask_scrape_error", source="postgres") == 0
    assert value(found, "longtask_scrape_error", source="redis") == 0


async def test_open_event_streams_are_counted_while_open(
        tenant_a: Tenant, live_worker: Worker, web: Web, redis: Redis) -> None:
    gate = f"gate:{uuid.uuid4()}"
    task_id = (await tenant_a.client.post(
        "/tasks", json={"kind": "test.echo", "params": {"gate": gate}})).json()["id"]

    async def streams() -> float:
        return value(await scrape(f"{web.url}/metrics"), "longtask_sse_connections")

    assert await streams() == 0
    watcher = asyncio.create_task(sse_events(tenant_a.client, task_id))
    assert await wait_for(streams, what="the open stream to be counted") >= 1
    await redis.set(gate, 1)
    events = await watcher  # the stream ends with the task
    assert events[-1][2].get("status") == "completed"

    async def closed() -> bool:
        return await streams() == 0

    await wait_for(closed, what="the stream to be counted out")


async def test_a_worker_serves_item_and_provider_metrics_on_its_port(make_stack: Any) -> None:
    port = free_port()
    with FakeOpenAI() as fake:
        stack = await make_stack(LONGTASK_METRICS_PORT=str(port), **fake_providers(fake))
        worker_url = f"http://127.0.0.1:{port}/metrics"
        task_id = (await stack.client.post(
            "/tasks", json={"kind": "test.echo", "params": {}})).json()["id"]
        await wait_status(stack.client, task_id, {"completed"})
        found = await scrape(worker_url)
        assert value(found, "longtask_item_seconds_count",
                     kind="test.echo", outcome="completed") >= 1
        assert value(found, "longtask_items_total", kind="test.echo", outcome="completed") >= 1

        fake.fail_next("500")  # the summary's first call: retried within the call
        submitted = await ingest(stack.client, sample_files()[:1])
        task = await wait_status(stack.client, submitted["id"], {"completed", "failed"},
                                 timeout=120)
        assert task["status"] == "completed" and task["items_failed"] == 0
        assert fake.calls("/v1/chat/completions") == 2
        found = await scrape(worker_url)
        assert value(found, "longtask_provider_retries_total", provider="llm") >= 1
        assert value(found, "longtask_llm_seconds_count") >= 2  # the failed attempt and the good
        assert value(found, "longtask_embed_seconds_count") >= 1
        assert value(found, "longtask_item_seconds_count",
                     kind="ingest", outcome="completed") >= 1


async def test_a_source_that_is_down_is_flagged_not_a_500(make_stack: Any,
                                                         services: Services) -> None:
    stack = await make_stack()
    services.redis.kill()
    try:
        found = await scrape(f"{stack.web.url}/metrics")  # 200, within its short timeouts
    finally:
        services.redis.start()
    assert value(found, "longtask_scrape_error", source="redis") == 1
    assert value(found, "longtask_scrape_error", source="postgres") == 0
    assert ("longtask_queue_depth", frozenset()) not in found  # left out, not a stale figure
    assert value(found, "longtask_sse_connections") == 0  # what the process knows itself


def test_prepare_multiprocess_makes_a_private_directory_when_none_is_set() -> None:
    env = {"PATH": "/usr/bin"}
    path = Path(prepare_multiprocess(env))
    assert env[MULTIPROC_DIR] == str(path) and path.is_dir() and not list(path.iterdir())


def test_prepare_multiprocess_empties_the_directory_it_is_given(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_123.db").write_bytes(b"stale")
    (shared / "notes.txt").write_text("not ours")
    env = {MULTIPROC_DIR: str(shared)}
    assert prepare_multiprocess(env) == str(shared)
    assert env == {MULTIPROC_DIR: str(shared)}
    assert [p.name for p in shared.iterdir()] == ["notes.txt"]  # the last run's counts only
    missing = tmp_path / "not-yet"
    prepare_multiprocess({MULTIPROC_DIR: str(missing)})
    assert missing.is_dir()


def test_what_workers_published_is_served_with_a_worker_label() -> None:
    one, two = WorkerMetrics(), WorkerMetrics()
    one.item_done("k", "completed", 0.3)
    one.item_done("k", "completed", 7.0)
    two.item_done("k", "failed", 0.1)
    families = {f.name: f for f in published_families(
        {"w1": one.dump(), "w2": two.dump().encode(), "w3": "{not json"})}
    items = {(s.name, s.labels["worker"], s.labels["outcome"]): s.value
             for s in families["longtask_items"].samples}
    assert items[("longtask_items_total", "w1", "completed")] == 2.0
    assert items[("longtask_items_total", "w2", "failed")] == 1.0
    assert ("longtask_items_created", "w1", "completed") in items
    assert {w for _, w, _ in items} == {"w1", "w2"}  # w3's is left out, not a failed scrape
    buckets = {s.labels["le"]: s.value for s in families["longtask_item_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["worker"] == "w1"}
    assert (buckets["0.25"], buckets["0.5"], buckets["10.0"], buckets["+Inf"]) == (0, 1, 2, 2)


def test_a_killed_web_process_keeps_its_counts_but_not_its_open_streams(tmp_path: Path) -> None:
    """What uvicorn does when a worker process dies: it starts another; the dead one's counters
    still count, its open streams no longer do."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT))),
           MULTIPROC_DIR: prepare_multiprocess({MULTIPROC_DIR: str(tmp_path)})}
    program = """if True:
        import os, sys
        from longtask.obs.metrics import Snapshot, WebMetrics
        metrics = WebMetrics()
        for _ in range(int(sys.argv[1])):
            metrics.request_done("GET", "/health", 200, 0.01)
        metrics.streams_open(int(sys.argv[2]))
        print(metrics.render(Snapshot(None, None, None, None)).decode())
        os._exit(0)  # no goodbye, like a killed process
    """

    def run(requests: int, streams: int) -> Samples:
        done = subprocess.run([sys.executable, "-c", program, str(requests), str(streams)],
                              env=env, capture_output=True, text=True, timeout=60, check=True)
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(done.stdout)
                for s in family.samples}

    assert value(run(3, 5), "longtask_sse_connections") == 5
    found = run(4, 1)
    assert value(found, "longtask_sse_connections") == 1  # the first process's 5 are gone
    assert value(found, "longtask_http_requests_total",
                 method="GET", route="/health", status="200") == 7


async def test_web_processes_on_one_machine_add_up(services: Services, migrated: str,
                                                   tmp_path: Path) -> None:
    """Two uvicorn processes: every scrape, whichever answers, counts every request answered
    before it, itself not yet (a request is counted as its answer goes out)."""
    env = {**services.env, "LONGTASK_QUEUE": "longtask:multiprocess",
           MULTIPROC_DIR: str(tmp_path / "metrics")}
    shared = Path(prepare_multiprocess(env))
    web = Web("web-2-processes", env, services.root / "logs", workers=2).start()
    supervisor = web.pid
    requests = "longtask_http_requests_total"
    try:
        await web.ready()
        first = await scrape(f"{web.url}/metrics")
        before = total(first, requests)  # the readiness checks
        assert before >= 1
        assert {dict(labels)["route"] for name, labels in first if name == requests} \
            == {"/health"}

        made = 0

        def answered_by() -> set[str]:  # a process's counter file appears with its first count
            return {p.name.split("_")[1][:-3] for p in shared.glob("counter_*.db")}

        async def both_processes_answered() -> bool:
            nonlocal made
            limits = httpx.Limits(max_keepalive_connections=0)  # a connection each
            async with httpx.AsyncClient(base_url=web.url, limits=limits) as client:
                answers = await asyncio.gather(*(client.get("/health") for _ in range(10)))
            assert all(a.status_code == 200 for a in answers)
            made += len(answers)
            return made >= 40 and len(answered_by()) == 2

        await wait_for(both_processes_answered, 60, "both web processes to answer requests")

        for scrapes_before in (1, 2):
            found = await scrape(f"{web.url}/metrics")
            assert total(found, requests) == before + made + scrapes_before
            assert total(found, "longtask_http_request_seconds_count") \
                == before + made + scrapes_before
    finally:
        web.terminate()
        with contextlib.suppress(ProcessLookupError):  # uvicorn's processes, if one lingers
            os.killpg(supervisor, signal.SIGKILL)


async def test_a_worker_without_a_port_is_on_the_webs_metrics(make_stack: Any,
                                                              redis: Redis) -> None:
    kind = "test.fanout"
    stack = await make_stack(LONGTASK_METRICS_PUSH_SECONDS="0.2", LONGTASK_METRICS_TTL="3")
    worker = stack.workers[0]
    [heartbeat] = [k async for k in redis.scan_iter(
        match=redis_keys.worker_key(f"*:{worker.pid}:*"))]
    worker_id = json.loads(await redis.get(heartbeat))["id"]
    items = [{"name": "a"}, {"name": "bad", "fail": True}, {"name": "c"}, {"name": "d"}]
    task_id = (await stack.client.post(
        "/tasks", json={"kind": kind, "params": {"items": items}})).json()["id"]
    task = await wait_status(stack.client, task_id, {"completed", "failed"})
    assert (task["items_done"], task["items_failed"]) == (4, 1)

    expected = {"completed": 3.0, "failed": 1.0}

    async def published() -> dict[str, float] | None:
        found = await scrape(f"{stack.web.url}/metrics")
        assert label_values(found, "longtask_items_total", "worker") <= {worker_id}
        runs = {outcome: found.get(("longtask_items_total", frozenset(
            {"kind": kind, "outcome": outcome, "worker": worker_id}.items())))
            for outcome in expected}
        seconds = {outcome: found.get(("longtask_item_seconds_count", frozenset(
            {"kind": kind, "outcome": outcome, "worker": worker_id}.items())))
            for outcome in expected}
        return runs if runs == expected and seconds == expected else None

    await wait_for(published, what="the worker's item counts on the web's /metrics")

    worker.terminate()

    async def gone() -> bool:
        found = await scrape(f"{stack.web.url}/metrics")
        assert value(found, "longtask_scrape_error", source="redis") == 0
        return not label_values(found, "longtask_item_seconds_count", "worker")

    await wait_for(gone, 20, "the stopped worker's series to expire")
