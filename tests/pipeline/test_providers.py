"""The real httpx provider clients against the project's OpenAI-compatible test server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from longtask.core.errors import PermanentError
from longtask.pipeline.chat import ChatClient
from longtask.pipeline.embed import HttpEmbedder
from longtask.pipeline.llm import ChatSummariser, ExtractiveSummariser, extractive_summary
from longtask.testing.fake_openai import CHAT, FakeOpenAI

TEXT = " ".join(f"word{i}" for i in range(60))



@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def summariser(server: FakeOpenAI, http: httpx.AsyncClient, timeout: float = 10) -> ChatSummariser:
    return ChatSummariser(ChatClient(http, server.base_url, "sk-test", "fake-chat", timeout=timeout))


async def test_a_streamed_summary_arrives_whole(server: FakeOpenAI,
                                                http: httpx.AsyncClient) -> None:
    deltas: list[str] = []

    async def on_delta(piece: str) -> None:
        deltas.append(piece)

    summary = await summariser(server, http).summarise(TEXT, on_delta)
    expected = "Summary: " + " ".join(TEXT.split()[:30])
    assert (summary.method, summary.text, summary.model) == ("llm", expected, "fake-chat")
    assert len(deltas) == 31 and "".join(deltas).strip() == expected
    assert server.requests[0].body["stream"] is True


async def test_429_retry_after_is_honoured(server: FakeOpenAI, http: httpx.AsyncClient) -> None:
    server.fail_next("429", retry_after=2)
    summary = await summariser(server, http).summarise(TEXT)
    assert summary.text.startswith("Summary:")
    first, second = server.requests
    assert first.status == 429 and second.status == 200
    assert second.started - first.ended >= 2.0  # waited as long as the server asked


async def test_a_500_is_retried_and_then_succeeds(server: FakeOpenAI,
                                                  http: httpx.AsyncClient) -> None:
    server.fail_next("500", count=2)
    summary = await summariser(server, http).summarise(TEXT)
    assert summary.method == "llm"
    assert [r.status for r in server.requests] == [500, 500, 200]


async def test_a_400_is_not_retried(server: FakeOpenAI, http: httpx.AsyncClient) -> None:
    server.fail_next("400")
    with pytest.raises(PermanentError) as failure:
        await summariser(server, http).summarise(TEXT)
    assert failure.value.code == "llm_rejected"
    assert "bad parameter" in failure.value.message
    assert server.calls(CHAT) == 1


async def test_a_broken_stream_and_a_hang_are_retried(server: FakeOpenAI,
                                                      http: httpx.AsyncClient) -> None:
    server.fail_next("broken_stream")
    server.fail_next("hang")
    summary = await summariser(server, http, timeout=1).summarise(TEXT)
    assert summary.text == "Summary: " + " ".join(TEXT.split()[:30])  # whole, not the first run's
    assert server.calls(CHAT) == 3


async def test_embeddings_endpoint(server: FakeOpenAI, http: httpx.AsyncClient) -> None:
    server.fail_next("500")
    embedder = HttpEmbedder(http, server.base_url, None, "fake-embed")
    vectors = await embedder.embed(["rivers and rain", "rain and rivers", "borrow checker"])
    assert [len(v) for v in vectors] == [384] * 3
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-6
    same = sum(a * b for a, b in zip(vectors[0], vectors[1]))
    other = sum(a * b for a, b in zip(vectors[0], vectors[2]))
    assert same > 0.99 > other
    assert server.calls("/v1/embeddings") == 2


def test_extractive_summary_picks_representative_sentences() -> None:
    text = ("Rivers carry water to the sea. Rivers also carry sediment to the sea. "
            "My cat likes naps in the sun. Water from rivers evaporates and returns as rain.")
    summary = extractive_summary(text, 2)
    assert "cat" not in summary and summary.count(".") == 2


async def test_the_extractive_summary_leaves_the_event_loop_free() -> None:
    """Seconds of regex work on a long document run in a thread: heartbeats go on meanwhile."""
    text = "The quick brown fox jumps over the lazy dog near the river bank. " * 150_000
    summarising = asyncio.create_task(ExtractiveSummariser().summarise(text))
    turns = 0
    while not summarising.done():  # the loop keeps turning while the summary is worked out
        await asyncio.sleep(0)
        turns += 1
    assert turns > 1  # on the loop itself, it would be done in the task's first step
    assert (await summarising).method == "extractive"


async def test_tool_calls_stream_back_whole(server: FakeOpenAI, http: httpx.AsyncClient) -> None:
    server.reply = lambda messages: {"content": "Let me look.", "tool_calls": [
        {"name": "search", "arguments": {"query": "levain", "k": 3}},
        {"name": "read_pages", "arguments": {"document_id": "d1", "first": 2, "last": 3}}]}
    deltas: list[str] = []

    async def relay(delta: str) -> None:
        deltas.append(delta)

    chat = ChatClient(http, server.base_url, None, "fake-chat")
    reply = await chat.complete([{"role": "user", "content": "when is the levain ready?"}],
                                tools=[{"type": "function", "function": {"name": "search"}}],
                                on_delta=relay)
    assert reply.content == "".join(deltas) == "Let me look."
    assert [(c.name, c.parsed()) for c in reply.tool_calls] == [
        ("search", {"query": "levain", "k": 3}),
        ("read_pages", {"document_id": "d1", "first": 2, "last": 3})]
    assert reply.finish_reason == "tool_calls" and reply.usage["total_tokens"] > 0
    assert reply.as_message()["tool_calls"][0]["function"]["name"] == "search"


async def test_a_retried_stream_tells_the_relay_to_start_over(server: FakeOpenAI,
                                                              http: httpx.AsyncClient) -> None:
    server.fail_next("broken_stream")
    shown: list[str] = []

    async def relay(delta: str) -> None:
        shown.append(delta)

    async def restart() -> None:
        shown.clear()

    chat = ChatClient(http, server.base_url, None, "fake-chat")
    reply = await chat.complete([{"role": "user", "content": TEXT}], on_delta=relay,
                                on_restart=restart)
    assert server.calls(CHAT) == 2
    assert "".join(shown) == reply.content  # the broken first attempt's words are gone
