"""The real httpx provider clients against the project's OpenAI-compatible test server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from longtask.errors import PermanentError
from longtask.pipeline.embed import HttpEmbedder
from longtask.pipeline.llm import ChatSummariser, extractive_summary
from longtask.testing.fake_openai import FakeOpenAI

TEXT = " ".join(f"word{i}" for i in range(60))
CHAT = "/v1/chat/completions"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def summariser(server: FakeOpenAI, http: httpx.AsyncClient, timeout: float = 10) -> ChatSummariser:
    return ChatSummariser(http, server.base_url, "sk-test", "fake-chat", timeout=timeout)


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
