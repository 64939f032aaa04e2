"""Webhooks: signed the Standard Webhooks way, sent from the outbox outside the job slots, tried
again with the same webhook-id until the receiver takes one, given up after the last attempt."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import asyncpg
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.support import WEBHOOK_SECRET, wait_for, wait_status

SECRET = WEBHOOK_SECRET
NEXT_SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"the next one").digest()).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"somebody else").digest()).decode()
HANG = "hang"  # a plan entry: no answer until release(), or until the client gives up


@dataclass
class Hit:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    status: int | None = None  # what it answers; None while it hangs, or if the client left

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def task_id(self) -> str:
        return str(json.loads(self.body)["data"]["task"]["id"])


@dataclass
class Receiver:
    """A webhook receiver on loopback (an asyncio server in the test's loop). It answers each
    request with the next entry of `plan`, an HTTP status or HANG, and 204 once it is empty."""

    plan: deque[int | str] = field(default_factory=deque)
    hits: list[Hit] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/longtask"

    def release(self) -> None:
        """Requests that hang get their answer at last: 503."""
        self._released.set()

    def of(self, task_id: str) -> list[Hit]:
        return [h for h in list(self.hits) if h.task_id == task_id]

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self.release()
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            hit = Hit(headers, await reader.readexactly(int(headers.get("content-length", 0))))
            self.hits.append(hit)
            answer = self.plan.popleft() if self.plan else 204
            if answer == HANG:
                left = asyncio.ensure_future(reader.read(1))  # b"": the client gave up
                released = asyncio.ensure_future(self._released.wait())
                await asyncio.wait({left, released}, return_when=asyncio.FIRST_COMPLETED)
                left.cancel()
                released.cancel()
                if not self._released.is_set():
                    return
                answer = 503
            assert isinstance(answer, int)
            hit.status = answer
            writer.write(f"HTTP/1.1 {answer} {HTTPStatus(answer).phrase}\r\nContent-Length: 0\r\n"
                         "Connection: close\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def hooks(receiver: Receiver, **env: str) -> dict[str, str]:
    return {"LONGTASK_WEBHOOK_URL": receiver.url, "LONGTASK_WEBHOOK_SECRET": SECRET, **env}


async def delivery(pool: asyncpg.Pool, task_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT id::text, status, attempts, last_status, last_error"
                               " FROM webhook_deliveries WHERE task_id = $1", task_id)


async def ended(pool: asyncpg.Pool, task_id: str, status: str) -> asyncpg.Record:
    """The task's outbox row, once the worker has recorded it as `status`."""

    async def check() -> asyncpg.Record | None:
        row = await delivery(pool, task_id)
        return row if row is not None and row["status"] == status else None

    found: asyncpg.Record = await wait_for(check, what=f"the webhook of {task_id} {status}")
    return found


async def test_ended_tasks_get_signed_webhooks(make_stack: Any) -> None:
    async with Receiver() as receiver:
        stack = await make_stack(**hooks(receiver, LONGTASK_WEBHOOK_SECRET=f"{SECRET} {NEXT_SECRET}"))
        client = stack.client
        done = (await client.post("/tasks", json={"kind": "test.echo",
                                                  "params": {"say": "hi"}})).json()["id"]
        failed = (await client.post("/tasks", json={"kind": "test.fanout", "params": {
            "items": [{"name": "bad", "fail": True}]}})).json()["id"]
        canceled = (await client.post("/tasks", json={"kind": "test.forever"})).json()["id"]
        await wait_status(client, canceled, {"running"})
        assert (await client.post(f"/tasks/{canceled}/cancel")).status_code == 200

        async def all_three() -> dict[str, Hit] | None:
            got = {h.task_id: h for h in list(receiver.hits) if h.status == 204}
            return got if len(got) == 3 else None

        hits = await wait_for(all_three, what="a webhook for each task")
        payloads = {}
        for task_id, hit in hits.items():
            # signed with each secret while one is rotated in: either one checks it
            payloads[task_id] = Webhook(SECRET).verify(hit.body, hit.headers)
            assert Webhook(NEXT_SECRET).verify(hit.body, hit.headers) == payloads[task_id]
            with pytest.raises(WebhookVerificationError):
                Webhook(OTHER_SECRET).verify(hit.body, hit.headers)
            with pytest.raises(WebhookVerificationError):  # changed on the way
                Webhook(SECRET).verify(hit.body.replace(b"tenant-a", b"tenant-b"), hit.headers)
            assert hit.headers["content-type"] == "application/json"
        assert len({h.id for h in hits.values()}) == 3

        assert {t: p["type"] for t, p in payloads.items()} == {
            done: "task.completed", failed: "task.failed", canceled: "task.canceled"}
        for task_id, payload in payloads.items():
            task = payload["data"]["task"]
            assert payload["data"]["tenant"] == "tenant-a"
            assert (task["id"], task["status"]) == (task_id, payload["type"].removeprefix("task."))
            assert payload["timestamp"].endswith("Z")
        assert payloads[done]["data"]["task"]["result"]["echo"] == {"say": "hi"}
        assert payloads[failed]["data"]["task"]["error"]["code"] == "bad_item"


async def test_a_receiver_that_hangs_holds_up_no_item(make_stack: Any,
                                                      pool: asyncpg.Pool) -> None:
    async with Receiver(plan=deque([HANG])) as receiver:
        # one job slot: a webhook sent from it would hold up every item after it
        stack = await make_stack(**hooks(receiver, LONGTASK_WORKER_CONCURRENCY="1",
                                         LONGTASK_WEBHOOK_TIMEOUT="60"))
        client = stack.client
        first = (await client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
        await wait_status(client, first, {"completed"})
        [hung] = await wait_for(lambda: _of(receiver, first), what="the first webhook")

        batch = (await client.post("/tasks", json={"kind": "test.fanout", "params": {
            "items": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}})).json()["id"]
        task = await wait_status(client, batch, {"completed", "failed"})
        assert [i["status"] for i in task["items"]] == ["completed"] * 3
        # the batch ran while the receiver still held the first webhook (it answers at release
        # or when the worker gives up after 60 s, longer than the wait above), and its own went
        # out beside it
        assert hung.status is None
        await wait_for(lambda: _of(receiver, batch, 204), what="the batch's webhook")
        assert hung.status is None

        receiver.release()  # the receiver answers at last (503): the webhook is tried again
        await wait_for(lambda: _of(receiver, first, 204), what="the hung webhook again")
        attempts = receiver.of(first)
        assert [h.status for h in attempts] == [503, 204]
        assert {h.id for h in attempts} == {hung.id}
        row = await ended(pool, first, "delivered")
        assert (row["id"], row["attempts"]) == (hung.id, 2)


async def test_a_failing_receiver_gets_retries_until_one_succeeds(make_stack: Any,
                                                                  pool: asyncpg.Pool) -> None:
    async with Receiver(plan=deque([HANG, 500, 500])) as receiver:
        stack = await make_stack(**hooks(receiver, LONGTASK_WEBHOOK_TIMEOUT="1",
                                         LONGTASK_WEBHOOK_ATTEMPTS="4"))
        client = stack.client
        first = (await client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
        await wait_for(lambda: _of(receiver, first, 204), what="a webhook the receiver took")
        attempts = receiver.of(first)
        # no answer within the timeout, two 500s, then taken: one webhook-id, one body
        assert [h.status for h in attempts] == [None, 500, 500, 204]
        assert len({h.id for h in attempts}) == 1 and len({h.body for h in attempts}) == 1
        for hit in attempts:
            Webhook(SECRET).verify(hit.body, hit.headers)
        row = await ended(pool, first, "delivered")
        assert (row["attempts"], row["last_status"]) == (4, 204)

        # a receiver that keeps failing gets LONGTASK_WEBHOOK_ATTEMPTS tries, then no more
        receiver.plan.extend([500] * 4)
        second = (await client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
        row = await ended(pool, second, "failed")
        assert (row["attempts"], row["last_status"]) == (4, 500)
        assert [h.status for h in receiver.of(second)] == [500] * 4

        async def logged() -> bool:
            return f"(task.completed of task {second}) failed: 4 attempts" in \
                stack.workers[0].tail(200)

        await wait_for(logged, what="the worker to log that it gave up")
        # the first one's success ended its attempts: none came since, all that while
        assert len(receiver.of(first)) == 4


async def _of(receiver: Receiver, task_id: str, status: int | None = None) -> list[Hit]:
    return [h for h in receiver.of(task_id) if status is None or h.status == status]
