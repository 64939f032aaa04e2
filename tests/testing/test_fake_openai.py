"""The project's OpenAI-compatible test server, spoken to with real httpx clients."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from longtask.dev.embedded import free_port
from longtask.testing.fake_openai import CHAT, EMBEDDINGS, FakeOpenAI
from tests.support import wait_for

TEXT = " ".join(f"word{i}" for i in range(60))
EXPECTED = "Summary: " + " ".join(f"word{i}" for i in range(30))
ASK = {"model": "fake-chat", "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": TEXT}]}


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def http(server: FakeOpenAI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        yield client


async def until(condition: Callable[[], Any], what: str, timeout: float = 10) -> None:
    """Wait, with a deadline, until `condition()` holds."""

    async def check() -> Any:
        return condition()

    await wait_for(check, timeout=timeout, what=what)


async def read_stream(response: httpx.Response) -> list[str]:
    """The `data:` payloads of an event stream, in order."""
    return [line[len("data: "):] async for line in response.aiter_lines()
            if line.startswith("data: ")]


def content_of(datas: list[str]) -> str:
    chunks = [json.loads(d) for d in datas if d != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_a_chat_answer_is_a_deterministic_summary(server: FakeOpenAI,
                                                       http: httpx.AsyncClient) -> None:
    answer = await http.post("/chat/completions", json=ASK)
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "chat.completion" and body["model"] == "fake-chat"
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": EXPECTED}
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 62 and usage["completion_tokens"] == 31
    assert usage["total_tokens"] == 93
    [record] = server.requests
    assert (record.path, record.status, record.body) == (CHAT, 200, ASK)
    assert record.ended >= record.started and server.calls(CHAT) == 1


async def test_a_stream_adds_up_to_the_same_reply_and_ends_with_done(
        server: FakeOpenAI, http: httpx.AsyncClient) -> None:
    async with http.stream("POST", "/chat/completions", json={**ASK, "stream": True}) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        datas = await read_stream(answer)
    assert datas[-1] == "[DONE]"
    first = json.loads(datas[0])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert json.loads(datas[-2])["choices"][0]["finish_reason"] == "stop"
    assert content_of(datas) == EXPECTED
    assert server.streams_closed_early == 0 and server.requests[0].status == 200


async def test_usage_is_streamed_when_asked(http: httpx.AsyncClient) -> None:
    ask = {**ASK, "stream": True, "stream_options": {"include_usage": True}}
    async with http.stream("POST", "/chat/completions", json=ask) as answer:
        datas = await read_stream(answer)
    last = json.loads(datas[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 31


async def test_the_reply_can_be_replaced(server: FakeOpenAI, http: httpx.AsyncClient) -> None:
    server.reply = lambda messages: f"{len(messages)} messages, no summary"
    answer = await http.post("/chat/completions", json=ASK)
    assert answer.json()["choices"][0]["message"]["content"] == "2 messages, no summary"
    async with http.stream("POST", "/chat/completions", json={**ASK, "stream": True}) as streamed:
        assert content_of(await read_stream(streamed)) == "2 messages, no summary"


async def test_embeddings_are_deterministic_unit_vectors(server: FakeOpenAI,
                                                         http: httpx.AsyncClient) -> None:
    texts = ["rivers and rain", "rain and rivers", "rivers and rain and snow", "borrow checker"]
    many = (await http.post("/embeddings", json={"model": "fake-embed", "input": texts})).json()
    one = (await http.post("/embeddings", json={"input": texts[0]})).json()
    assert many["object"] == "list" and many["model"] == "fake-embed"
    assert [d["index"] for d in many["data"]] == [0, 1, 2, 3]
    vectors = [d["embedding"] for d in many["data"]]
    assert [len(v) for v in vectors] == [384] * 4
    assert all(math.isclose(sum(x * x for x in v), 1.0) for v in vectors)
    assert one["data"][0]["embedding"] == vectors[0]  # the same text, the same vector

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b))

    assert cosine(vectors[0], vectors[1]) > 0.99
    assert cosine(vectors[0], vectors[3]) < cosine(vectors[0], vectors[2]) < 0.99
    server.dimensions = 64
    small = (await http.post("/embeddings", json={"input": ["x"]})).json()
    assert len(small["data"][0]["embedding"]) == 64 and server.calls(EMBEDDINGS) == 3


async def test_models_and_bad_requests(http: httpx.AsyncClient) -> None:
    models = (await http.get("/models")).json()
    assert [m["id"] for m in models["data"]] == ["fake-chat", "fake-embed"]
    for path, body in [("/chat/completions", {"model": "x"}), ("/embeddings", {"input": 3})]:
        answer = await http.post(path, json=body)
        assert answer.status_code == 400 and answer.json()["error"]["message"]


async def test_a_429_carries_retry_after(server: FakeOpenAI, http: httpx.AsyncClient) -> None:
    server.fail_next("429", retry_after=7)
    answer = await http.post("/chat/completions", json=ASK)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "7"
    error = answer.json()["error"]
    assert error["type"] == "requests" and "rate limit" in error["message"]
    assert server.requests[0].fault == "429"


async def test_faults_are_used_in_order_one_per_request(server: FakeOpenAI,
                                                        http: httpx.AsyncClient) -> None:
    server.fail_next("500")
    server.fail_next("400")
    server.fail_next("429", count=2, after=1)
    statuses = [(await http.post(path, json=body)).status_code for path, body in [
        ("/chat/completions", ASK), ("/embeddings", {"input": "a"}),
        ("/chat/completions", ASK), ("/embeddings", {"input": "b"}),
        ("/chat/completions", ASK), ("/chat/completions", ASK)]]
    assert statuses == [500, 400, 200, 429, 429, 200]
    assert [r.status for r in server.requests] == statuses
    assert [r.fault for r in server.requests] == ["500", "400", None, "429", "429", None]
    assert (server.calls(CHAT), server.calls(EMBEDDINGS)) == (4, 2)


async def test_a_hang_lasts_until_the_client_gives_up(server: FakeOpenAI,
                                                     http: httpx.AsyncClient) -> None:
    server.fail_next("hang")
    with pytest.raises(httpx.ReadTimeout):
        await http.post("/chat/completions", json=ASK, timeout=0.5)
    await until(lambda: server.in_flight == 0, "the server to notice the client left")
    assert server.requests[0].status == 0 and server.requests[0].fault == "hang"
    assert (await http.post("/chat/completions", json=ASK)).status_code == 200


async def test_a_hang_ends_when_the_server_stops() -> None:
    async with FakeOpenAI() as fake, httpx.AsyncClient(base_url=fake.base_url,
                                                        timeout=30) as client:
        fake.fail_next("hang")
        waiting = asyncio.create_task(client.post("/embeddings", json={"input": "a"}))
        await until(lambda: fake.in_flight == 1, "the request to arrive")
        await asyncio.to_thread(fake.stop)  # off the loop, which the client needs meanwhile
        assert (await waiting).status_code == 503
        assert fake.requests[0].status == 503


async def test_a_broken_stream_fails_before_done(server: FakeOpenAI,
                                                 http: httpx.AsyncClient) -> None:
    server.fail_next("broken_stream")
    datas: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with http.stream("POST", "/chat/completions", json={**ASK, "stream": True}) as answer:
            async for line in answer.aiter_lines():
                if line.startswith("data: "):
                    datas.append(line[len("data: "):])
    assert 0 < len(datas) < 31 and "[DONE]" not in datas
    assert server.streams_closed_early == 0 and server.requests[0].fault == "broken_stream"
    again = await http.post("/chat/completions", json=ASK)  # the next request is fine
    assert again.json()["choices"][0]["message"]["content"] == EXPECTED


async def test_a_broken_answer_fails_without_a_stream(server: FakeOpenAI,
                                                      http: httpx.AsyncClient) -> None:
    server.fail_next("broken_stream", count=2)
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post("/chat/completions", json=ASK)
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post("/embeddings", json={"input": "a"})


async def test_many_requests_wait_at_once(server: FakeOpenAI, http: httpx.AsyncClient) -> None:
    server.latency = 0.5
    answers = await asyncio.gather(*[http.post("/embeddings", json={"input": f"text {i}"})
                                     for i in range(50)])
    assert {a.status_code for a in answers} == {200}
    assert server.max_concurrency >= 40  # they waited together, not one after another
    # each waited its latency (the event loop may wake a timer up to its clock resolution early)
    assert all(r.ended - r.started >= 0.49 for r in server.requests)


async def test_the_rate_limit_answers_429_past_its_requests(server: FakeOpenAI,
                                                            http: httpx.AsyncClient) -> None:
    server.requests_per_minute = 3
    statuses = [(await http.post("/embeddings", json={"input": "a"})).status_code
                for _ in range(3)]
    limited = await http.post("/chat/completions", json=ASK)
    assert statuses == [200, 200, 200] and limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert [r.fault for r in server.requests] == [None, None, None, "rate_limit"]
    server.requests_per_minute = None
    assert (await http.post("/chat/completions", json=ASK)).status_code == 200


async def test_a_stream_the_client_leaves_is_counted(server: FakeOpenAI,
                                                     http: httpx.AsyncClient) -> None:
    server.token_delay = 0.05  # the whole stream would take 1.5 s
    async with http.stream("POST", "/chat/completions", json={**ASK, "stream": True}) as answer:
        lines = answer.aiter_lines()
        assert (await anext(lines)).startswith("data: ")
    await until(lambda: server.streams_closed_early == 1, "the server to count the early close")
    assert server.in_flight == 0


async def test_streamed_chunks_keep_to_a_schedule_and_their_times_are_noted(
        server: FakeOpenAI, http: httpx.AsyncClient) -> None:
    server.token_delay = 0.02
    async with http.stream("POST", "/chat/completions", json={**ASK, "stream": True}) as answer:
        datas = await read_stream(answer)
    [record] = server.requests
    assert len(record.sent) == len(datas) - 1  # every chunk but [DONE]
    assert record.started <= record.sent[0] and record.sent == sorted(record.sent)
    # chunk n goes out in its slot, n x token_delay after the first, never before it (give or
    # take the loop's clock resolution)
    assert all(t - record.sent[0] >= n * 0.02 - 0.002 for n, t in enumerate(record.sent))


async def test_reset_forgets_requests_and_faults(server: FakeOpenAI,
                                                 http: httpx.AsyncClient) -> None:
    server.fail_next("500")
    await http.post("/embeddings", json={"input": "a"})
    server.fail_next("500")
    server.reset()
    assert (server.requests, server.max_concurrency, server.calls(EMBEDDINGS)) == ([], 0, 0)
    assert (await http.post("/embeddings", json={"input": "a"})).status_code == 200


async def test_it_runs_in_the_foreground_as_a_module() -> None:
    port = free_port()
    command = [sys.executable, "-m", "longtask.testing.fake_openai", "--port", str(port),
               "--latency", "0.1"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1",
                                         timeout=5) as client:

                async def answer() -> Any:
                    try:
                        return (await client.post("/chat/completions", json=ASK)).json()
                    except httpx.ConnectError:
                        return None

                body = await wait_for(answer, timeout=15, what="the server to answer")
        finally:
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=15)
    assert body["choices"][0]["message"]["content"] == EXPECTED
    assert process.returncode == 0, output.decode()
