"""/metrics on the web process and a worker's metrics port, read the way Prometheus reads them,
against real processes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from longtask.dev.embedded import free_port
from longtask.testing.fake_openai import FakeOpenAI
from tests.conftest import Services, Tenant
from tests.jobs.test_ingest import ingest, sample_files
from tests.support import Web, Worker, fake_providers, sse_events, wait_for, wait_status

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient() as client:  # no key: like /health
        response = await client.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


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
