"""X-Request-ID on every answer, and LOG_FORMAT=json lines that carry request, task and item ids,
from real web and worker processes."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.conftest import Tenant
from tests.sockets import ws_url
from tests.support import Proc, Web, wait_for, wait_status

GENERATED = re.compile(r"[0-9a-f]{32}")


def json_lines(proc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _lines(proc.log_path) if line.startswith("{")]


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]


def own_lines(web: Web) -> list[str]:
    """The lines of this very web process (a log file may hold an earlier one's of that name)."""
    lines = _lines(web.log_path)
    starts = [n for n, line in enumerate(lines) if f"Started server process [{web.pid}]" in line]
    assert starts, f"{web.name} did not log its start"
    return lines[starts[-1]:]


async def test_every_answer_carries_a_request_id(tenant_a: Tenant, web: Web) -> None:
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as anon:
        answers = [
            await anon.get("/health"),  # 200
            await anon.get("/tasks"),  # 401: no key
            await tenant_a.client.get(f"/tasks/{uuid.uuid4()}"),  # 404
            await anon.get("/no/such/route"),  # 404 from the router
        ]
        assert [a.status_code for a in answers] == [200, 401, 404, 404]
        ids = [a.headers.get("x-request-id", "") for a in answers]
        assert all(GENERATED.fullmatch(i) for i in ids), ids
        assert len(set(ids)) == len(ids)  # one per request

        task_id = (await tenant_a.client.post(
            "/tasks", json={"kind": "test.echo", "params": {"gate": "never"}})).json()["id"]
        async with tenant_a.client.stream("GET", f"/tasks/{task_id}/events",
                                          headers={"X-Request-ID": "stream-1"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["x-request-id"] == "stream-1"
        await tenant_a.client.post(f"/tasks/{task_id}/cancel")

        sane = "Trace-0123.abc_DEF-" + "x" * 100
        assert (await anon.get("/health", headers={"X-Request-ID": sane})).headers[
            "x-request-id"] == sane
        for bad in ["has spaces", "x" * 129, "semi;colon", "évé"]:
            answer = await anon.get("/health", headers={"X-Request-ID": bad.encode()})
            assert GENERATED.fullmatch(answer.headers["x-request-id"]), bad


async def test_json_logs_carry_request_task_and_item_ids(make_stack: Any) -> None:
    stack = await make_stack(LOG_FORMAT="json")
    sent = f"req-{uuid.uuid4().hex[:12]}"
    submitted = await stack.client.post("/tasks", json={"kind": "test.echo", "params": {}},
                                         headers={"X-Request-ID": sent})
    assert submitted.headers["x-request-id"] == sent
    task_id = submitted.json()["id"]
    task = await wait_status(stack.client, task_id, {"completed"})
    item_id = task["items"][0]["id"]
    token = await stream_with_a_token(stack, task_id)

    async def request_logged() -> list[dict[str, Any]]:
        return [r for r in json_lines(stack.web) if r.get("request_id") == sent]

    lines = await wait_for(request_logged, what="the request's log line")
    assert any("POST /tasks" in r["message"] for r in lines)
    records = [json.loads(line) for line in own_lines(stack.web)]  # every line is JSON
    assert records[0]["logger"] == "uvicorn.error"  # uvicorn's own lines too
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)

    async def item_logged() -> list[dict[str, Any]]:
        return [r for r in json_lines(stack.workers[0])
                if r.get("task_id") == task_id and r.get("item_id") == item_id]

    assert await wait_for(item_logged, what="the worker's line for the item")
    for proc in (stack.web, stack.workers[0]):
        text = proc.log_path.read_text()
        assert token not in text and stack.key not in text


async def test_text_logs_print_each_line_once_in_one_format(make_stack: Any) -> None:
    """uvicorn's and the `arq` command's own handlers are taken over: each record is one line,
    in longtask's format, with stream tokens masked (text is the default format)."""
    stack = await make_stack()
    submitted = await stack.client.post("/tasks", json={"kind": "test.echo", "params": {}})
    task_id = submitted.json()["id"]
    task = await wait_status(stack.client, task_id, {"completed"})
    item_id = task["items"][0]["id"]
    token = await stream_with_a_token(stack, task_id)
    web, worker = stack.web, stack.workers[0]

    async def logged() -> bool:
        return f"← item:{item_id}" in worker.log_path.read_text()

    await wait_for(logged, what="the item's lines")
    ours = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+ ")
    for line in (f"→ item:{item_id}", f"← item:{item_id}"):  # ARQ's, for this item's job
        found = [n for n in _lines(worker.log_path) if line in n]
        assert len(found) == 1, found
        assert ours.match(found[0]), found[0]
    assert all(ours.match(n) for n in own_lines(web)), own_lines(web)

    def count(proc: Proc, line: str) -> int:  # a log file may hold earlier processes' lines
        return sum(line in n for n in _lines(proc.log_path))

    # once per process start: ARQ's line as often as ours, uvicorn's as often as its other one
    assert count(worker, "Starting worker for") == count(worker, "ready; kinds:") >= 1
    assert count(web, "Application startup complete") == count(web, "Started server process")
    assert token not in web.log_path.read_text()


async def stream_with_a_token(stack: Any, task_id: str) -> str:
    """Follow the (ended) task as a browser does, with a stream token in the URL, over SSE and
    over a WebSocket; return the token once the web has logged both requests."""
    token = (await stack.client.post(f"/tasks/{task_id}/stream-token")).json()["token"]
    async with httpx.AsyncClient(base_url=stack.web.url) as anon:
        replay = await anon.get(f"/tasks/{task_id}/events", params={"token": token})
        assert replay.status_code == 200  # the history, then the stream ends with the task
    async with connect(ws_url(stack.web.url, task_id, token=token, after="0")) as ws:
        assert json.loads(await ws.recv())["event"]

    async def logged() -> bool:
        text = stack.web.log_path.read_text()
        return "/events" in text and "WebSocket /tasks/" in text

    await wait_for(logged, what="the web's lines of both stream requests")
    return str(token)
