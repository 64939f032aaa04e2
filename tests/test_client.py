"""The Python client against a real server: typed results and errors, pages, waiting, and a
followed stream that survives a dropped connection with every event exactly once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from httpx_sse import ServerSentEvent
from redis.asyncio import Redis

from longtask.client import AsyncClient, Client
from longtask.client.errors import (
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unauthorized,
    WaitTimeout,
)
from longtask.client.follow import RECONNECT, Cursor
from longtask.client.models import Event
from longtask.dev.embedded import free_port
from tests.conftest import Tenant
from tests.support import (
    ROOT,
    SAMPLES,
    CuttableProxy,
    Web,
    Worker,
    assert_event_times,
    sse_timed_events,
    utc_now,
    wait_for,
)

FANOUT = {"items": [{"name": "good"}, {"name": "bad", "fail": True}]}


@pytest.fixture
def client_a(tenant_a: Tenant, web: Web) -> Iterator[Client]:
    with Client(web.url, tenant_a.key, timeout=30) as client:
        yield client


async def test_submit_get_pages_stats_and_delete(client_a: Client, live_worker: Worker) -> None:
    start = utc_now()
    submitted = [client_a.submit("test.echo", {"n": n}) for n in range(5)]
    assert all(t.status == "pending" and t.kind == "test.echo" for t in submitted)
    done = [client_a.wait(t.id, timeout=30) for t in submitted]
    assert [t.status for t in done] == ["completed"] * 5
    assert done[3].result["echo"] == {"n": 3} and done[3].items[0].status == "completed"
    assert done[3].finished_at is not None and done[3].last_seq > 1

    first = client_a.list(limit=2)
    assert len(first.tasks) == 2 and first.next_cursor
    second = client_a.list(limit=2, cursor=first.next_cursor)
    assert {t.id for t in first.tasks}.isdisjoint(t.id for t in second.tasks)
    every = [t.id for t in client_a.iter_tasks(kind="test.echo", page_size=2)]
    assert every == [t.id for t in reversed(submitted)]  # newest first, each once
    assert list(client_a.iter_tasks(status="failed")) == []
    assert client_a.stats().by_status == {"completed": 5}
    replay = list(client_a.follow(done[0].id))  # an ended task: its whole history, then the end
    assert [e.seq for e in replay] == list(range(1, done[0].last_seq + 1)) and replay[-1].terminal
    assert_event_times([e.seq for e in replay], [e.at for e in replay], start, utc_now())
    assert all("at" not in e.data for e in replay)  # moved out of the data into `at`
    assert list(client_a.follow(done[0].id, after=done[0].last_seq)) == []  # 204: nothing more

    again = client_a.submit("test.echo", {"n": 9}, idempotency_key="once")
    assert client_a.submit("test.echo", {"n": 9}, idempotency_key="once").id == again.id
    client_a.wait(again.id, timeout=30)
    client_a.delete(again.id)
    with pytest.raises(NotFound) as gone:
        client_a.get(again.id)
    assert gone.value.status == 404 and gone.value.code == "not_found"


async def test_errors_are_typed_with_the_servers_code_and_detail(
        client_a: Client, tenant_a: Tenant, tenant_b: Tenant, web: Web,
        live_worker: Worker) -> None:
    theirs = (await tenant_b.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    raw = (await tenant_a.client.get(f"/tasks/{theirs}")).json()
    with pytest.raises(NotFound) as other_tenant:
        client_a.get(theirs)
    assert other_tenant.value.detail == raw["detail"] and theirs in str(other_tenant.value)
    for call in (client_a.cancel, client_a.retry, client_a.delete, client_a.wait,
                 lambda i: list(client_a.follow(i))):
        with pytest.raises(NotFound):
            call(theirs)

    with pytest.raises(InvalidRequest) as unknown:
        client_a.submit("no.such.kind", {})
    assert unknown.value.status == 422 and "test.echo" in str(unknown.value.detail)
    with pytest.raises(InvalidRequest) as bad_status:
        client_a.list(status="sleeping")
    assert (bad_status.value.status, bad_status.value.code) == (400, "invalid_query")
    with pytest.raises(InvalidRequest):
        client_a.search("   ")

    done = client_a.wait(client_a.submit("test.echo").id, timeout=30)
    with pytest.raises(Conflict) as ended:
        client_a.cancel(done.id)
    assert ended.value.status == 409
    with pytest.raises(Conflict):
        client_a.retry(done.id)  # nothing failed

    with Client(web.url, "lt_not_a_key") as stranger, pytest.raises(Unauthorized) as denied:
        stranger.stats()
    assert denied.value.status == 401
    with Client(f"http://127.0.0.1:{free_port()}", "lt_x") as nowhere, \
            pytest.raises(ConnectionFailed, match="cannot reach"):
        nowhere.get(done.id)


async def test_async_cancel_retry_and_wait(tenant_a: Tenant, web: Web,
                                           live_worker: Worker) -> None:
    async with AsyncClient(web.url, tenant_a.key) as client:
        forever = await client.submit("test.forever")
        async for event in client.follow(forever.id):
            assert event.at is not None and event.at.utcoffset() == timedelta(0)
            if event.type == "progress":
                break  # it runs
        canceled = await client.cancel(forever.id)
        assert canceled.status == "canceled"
        assert (await client.wait(forever.id, timeout=30)).status == "canceled"

        batch = await client.wait((await client.submit("test.fanout", FANOUT)).id, timeout=30)
        assert (batch.status, batch.items_failed) == ("completed", 1)
        assert [(i.name, i.status) for i in batch.items] == [("good", "completed"),
                                                              ("bad", "failed")]
        again = await client.retry(batch.id)
        assert again.retry_of == batch.id and again.items_total == 1
        final = await client.wait(again.id, timeout=30)
        assert final.status == "failed" and final.items[0].error["code"] == "bad_item"
        assert [t.id async for t in client.iter_tasks(page_size=1)] == [
            again.id, batch.id, forever.id]


async def test_wait_ends_with_a_typed_timeout(client_a: Client, tenant_a: Tenant, web: Web,
                                              redis: Redis, live_worker: Worker) -> None:
    held = client_a.submit("test.echo", {"gate": "gate:wait"})
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        client_a.wait(held.id, timeout=3)  # longer than a ping interval: pings do not extend it
    assert time.monotonic() - started < 8
    async with AsyncClient(web.url, tenant_a.key) as client:
        with pytest.raises(TimeoutError):  # WaitTimeout is one
            await client.wait(held.id, timeout=0.5)
        await redis.set("gate:wait", 1)
        assert (await client.wait(held.id, timeout=30)).status == "completed"


async def test_upload_and_search(client_a: Client, tenant_b: Tenant, live_worker: Worker) -> None:
    sample = SAMPLES / "sourdough.pdf"
    up = client_a.upload([sample, ("notes.txt", b"not a pdf")], metadata={"team": "bakery"})
    assert [d.filename for d in up.documents] == ["sourdough.pdf", "notes.txt"]
    done = client_a.wait(up.task.id, timeout=90)
    assert done.status == "completed" and done.items_failed == 1
    hits = client_a.search("how long should the levain rise", k=3)
    assert hits and hits[0].filename == "sourdough.pdf" and 0 < hits[0].score <= 1
    assert all(h.document_id == up.documents[0].id for h in hits)
    with Client(client_a.base_url, tenant_b.key) as other, pytest.raises(NotFound):
        other.search("levain", document_id=up.documents[0].id)  # a real id, not theirs


async def test_the_readme_example_runs(tenant_a: Tenant, web: Web, live_worker: Worker,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python client and CLI"):]
    example = section[section.index("```python") + 9:section.index("```\n", 10)]
    monkeypatch.setenv("LONGTASK_URL", web.url)
    monkeypatch.setenv("LONGTASK_API_KEY", tenant_a.key)
    monkeypatch.chdir(ROOT)
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1 status {'status': 'pending'") and "completed" in out
    assert "sourdough.pdf p.1" in out[out.index("completed") + 1]


def _assert_whole_stream(got: list[Event], replay: list[tuple[int, str, dict, datetime]],
                         start: datetime) -> None:
    assert [e.seq for e in got] == list(range(1, len(replay) + 1))  # every one, once, in order
    # each with the time it was stored, whether it came live, after a reconnect, or replayed
    assert [(e.seq, e.type, e.data, e.at) for e in got] == replay
    assert got[-1].terminal and got[-1].data["status"] == "completed"
    assert_event_times([e.seq for e in got], [e.at for e in got], start, utc_now())


async def test_sync_follow_survives_a_dropped_connection(
        tenant_a: Tenant, web: Web, redis: Redis, live_worker: Worker) -> None:
    start = utc_now()
    task_id = (await tenant_a.client.post(
        "/tasks", json={"kind": "test.echo", "params": {"gate": "gate:sync"}})).json()["id"]
    got: list[Event] = []
    lock = threading.Lock()

    async with CuttableProxy(web.port) as proxy:
        def follow() -> None:
            with Client(proxy.url, tenant_a.key) as client:
                for event in client.follow(task_id):
                    with lock:
                        got.append(event)

        reader = asyncio.create_task(asyncio.to_thread(follow))

        async def seen(n: int) -> bool:
            with lock:
                return len(got) >= n

        await wait_for(lambda: seen(2), what="the first two events")  # pending, running
        proxy.refusing = True
        proxy.cut()  # the connection drops mid-stream, and reconnects fail for a while
        await redis.set("gate:sync", 1)
        await wait_for(lambda: _status(tenant_a, task_id, "completed"), what="the task to end")
        await wait_for(lambda: _at_least(proxy, 3), what="a refused reconnect")
        proxy.refusing = False
        await asyncio.wait_for(reader, 60)
    _assert_whole_stream(got, await sse_timed_events(tenant_a.client, task_id), start)


async def test_async_follow_survives_a_dropped_connection_while_live(
        tenant_a: Tenant, web: Web, redis: Redis, live_worker: Worker) -> None:
    start = utc_now()
    task_id = (await tenant_a.client.post(
        "/tasks", json={"kind": "test.echo", "params": {"gate": "gate:async"}})).json()["id"]
    got: list[Event] = []
    async with CuttableProxy(web.port) as proxy, AsyncClient(proxy.url, tenant_a.key) as client:
        async def follow() -> None:
            async for event in client.follow(task_id):
                got.append(event)

        reader = asyncio.create_task(follow())

        async def seen() -> bool:
            return len(got) >= 2

        await wait_for(seen, what="the first two events")
        proxy.cut()
        await wait_for(lambda: _at_least(proxy, 2), what="the client to reconnect")
        await redis.set("gate:async", 1)  # the rest comes live, on the new connection
        await asyncio.wait_for(reader, 60)
    _assert_whole_stream(got, await sse_timed_events(tenant_a.client, task_id), start)


async def test_wait_polls_when_the_stream_is_refused(tenant_a: Tenant, web: Web, redis: Redis,
                                                    live_worker: Worker) -> None:
    task_id = (await tenant_a.client.post(
        "/tasks", json={"kind": "test.echo", "params": {"gate": "gate:poll"}})).json()["id"]
    async with CuttableProxy(web.port) as proxy:
        proxy.no_streams = True

        def wait() -> str:
            with Client(proxy.url, tenant_a.key) as client:
                return client.wait(task_id, timeout=60).status

        waiting = asyncio.create_task(asyncio.to_thread(wait))
        await wait_for(lambda: _refused(proxy), what="the event stream to be refused")
        await redis.set("gate:poll", 1)
        assert await asyncio.wait_for(waiting, 60) == "completed"  # found by polling
        assert proxy.streams_refused == 1


async def _refused(proxy: CuttableProxy) -> bool:
    return proxy.streams_refused > 0


async def _status(tenant: Tenant, task_id: str, status: str) -> bool:
    return bool((await tenant.client.get(f"/tasks/{task_id}")).json()["status"] == status)


async def _at_least(proxy: CuttableProxy, n: int) -> bool:
    return proxy.connections >= n


def test_no_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LONGTASK_API_KEY", raising=False)
    with pytest.raises(Exception, match="LONGTASK_API_KEY"):
        Client("http://127.0.0.1:1")
    monkeypatch.setenv("LONGTASK_API_KEY", "lt_env")
    monkeypatch.setenv("LONGTASK_URL", "http://127.0.0.1:1/")
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:1"


def test_an_events_time_moves_from_its_data_to_at() -> None:
    cursor = Cursor("t1")
    stored = cursor.accept(ServerSentEvent(
        "item", '{"item":0,"status":"running","at":"2026-11-30T16:04:05.123456Z"}', "1"))
    assert stored == Event(1, "item", {"item": 0, "status": "running"},
                           datetime(2026, 11, 30, 16, 4, 5, 123456, timezone.utc))
    assert stored is not None and stored.at is not None and stored.at.tzinfo == timezone.utc
    live = cursor.accept(ServerSentEvent(
        "delta", '{"item":0,"step":1,"offset":0,"text":"hi","at":"2026-11-30T16:04:06.000001Z"}'))
    assert live is not None and (live.seq, live.data["text"]) == (1, "hi")
    assert live.at == datetime(2026, 11, 30, 16, 4, 6, 1, timezone.utc)
    older = cursor.accept(ServerSentEvent("item", '{"item":0,"status":"completed"}', "2"))
    assert older == Event(2, "item", {"item": 0, "status": "completed"})  # a server before `at`
    assert older is not None and older.at is None


def test_a_stream_refused_over_the_tenants_limits_is_waited_out() -> None:
    """The server's answer to a stream over the limits, as an EventSource recovers from it: a
    `retry:`, an `error` event, the end. `follow` reconnects after `retry_after`, not sooner."""
    cursor = Cursor("t1")
    refusal = ServerSentEvent("error", '{"error":"too_many_streams","detail":"full",'
                                       '"retry_after":10}', retry=12000)
    with pytest.raises(RateLimited) as raised:
        cursor.accept(refusal)
    assert (raised.value.code, raised.value.retry_after) == ("too_many_streams", 10.0)
    assert isinstance(raised.value, RECONNECT)
    assert 5.0 <= cursor.backoff(raised.value) <= 10.0
