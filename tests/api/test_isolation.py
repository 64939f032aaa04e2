"""Tenants are isolated: another tenant's ids answer 404 on every endpoint that takes one (the
walk is built from the route table, so a new endpoint cannot be left out), and lists, search and
stats show nothing of another tenant's."""

from __future__ import annotations

from typing import Any

import asyncpg

from longtask.testing import pdfs
from longtask.web.routes import documents, ops, schedules, sockets, stream, tasks
from tests.conftest import Tenant
from tests.sockets import socket_events, ws_url
from tests.support import SAMPLES, Web, Worker, wait_status

SAMPLE = pdfs.SAMPLES[0]


def routes_with_ids() -> set[tuple[str, str]]:
    found = set()
    for route in [*tasks.routes, *stream.routes, *schedules.routes, *documents.routes,
                  *ops.routes]:
        for method in route.methods or ():
            if "{id}" in route.path and method != "HEAD":
                found.add((method, route.path))
    return found


async def test_another_tenants_ids_answer_404_everywhere(tenant_a: Tenant, tenant_b: Tenant,
                                                        live_worker: Worker, web: Web,
                                                        pool: asyncpg.Pool) -> None:
    pdf = (SAMPLES / f"{SAMPLE.filename}.pdf").read_bytes()
    upload = (await tenant_a.client.post(
        "/documents", files=[("files", (f"{SAMPLE.filename}.pdf", pdf, "application/pdf"))])).json()
    await wait_status(tenant_a.client, upload["id"], {"completed"}, timeout=120)
    document = upload["documents"][0]["document_id"]
    failed = (await tenant_a.client.post("/tasks", json={
        "kind": "test.fanout", "params": {"items": [{"name": "bad", "fail": True},
                                                    {"name": "good"}]}})).json()["id"]
    await wait_status(tenant_a.client, failed, {"completed"})
    schedule = (await tenant_a.client.post("/schedules", json={
        "kind": "test.echo", "cron": "0 0 1 1 *"})).json()["id"]
    ids = {"/tasks": failed, "/documents": document, "/schedules": schedule}

    walk: dict[tuple[str, str], dict[str, Any]] = {
        ("GET", "/tasks/{id}"): {}, ("DELETE", "/tasks/{id}"): {},
        ("POST", "/tasks/{id}/cancel"): {}, ("POST", "/tasks/{id}/retry"): {},
        ("POST", "/tasks/{id}/stream-token"): {}, ("GET", "/tasks/{id}/events"): {},
        ("GET", "/documents/{id}"): {}, ("DELETE", "/documents/{id}"): {},
        ("GET", "/schedules/{id}"): {}, ("DELETE", "/schedules/{id}"): {},
        ("POST", "/schedules/{id}/pause"): {}, ("POST", "/schedules/{id}/resume"): {},
    }
    assert set(walk) == routes_with_ids()  # every endpoint that takes an id is walked
    for (method, path), options in walk.items():
        url = path.replace("{id}", ids["/" + path.split("/")[1]])
        answer = await tenant_b.client.request(method, url, **options)
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found"), (method, url)
    # the WebSocket too (not in the walk: a WebSocket route has no HTTP methods)
    assert [r.path for r in sockets.routes] == ["/tasks/{id}/ws"]
    refused = await socket_events(ws_url(web.url, failed, after="0"),
                                  {"Authorization": f"Bearer {tenant_b.key}"})
    assert (refused.code, refused.reason, refused.events) == (4404, "not_found", [])
    by_document = await tenant_b.client.get("/search", params={"q": SAMPLE.phrase,
                                                               "document_id": document})
    assert by_document.status_code == 404

    # lists, search and stats of tenant B show nothing of A's
    assert (await tenant_b.client.get("/tasks")).json()["tasks"] == []
    assert (await tenant_b.client.get("/documents")).json()["documents"] == []
    assert (await tenant_b.client.get("/schedules")).json()["schedules"] == []
    assert (await tenant_b.client.get("/tasks", params={"schedule_id": schedule})).json()[
        "tasks"] == []
    assert (await tenant_b.client.get("/search", params={"q": SAMPLE.phrase})).json()[
        "results"] == []
    assert (await tenant_b.client.get("/stats")).json()["tasks"]["by_status"] == {}
    # and A's work is untouched by B's deletes and cancels
    assert (await tenant_a.client.get(f"/tasks/{failed}")).status_code == 200
    assert (await tenant_a.client.get(f"/schedules/{schedule}")).json()["paused"] is False
    hits = (await tenant_a.client.get("/search", params={"q": SAMPLE.phrase})).json()["results"]
    assert hits and hits[0]["document_id"] == document
    assert await pool.fetchval("SELECT count(*) FROM chunks WHERE document_id = $1",
                               document) > 0
