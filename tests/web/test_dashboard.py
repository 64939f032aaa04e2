"""The dashboard in a real browser: Debian's chromium, driven by playwright-core (tests/web/*.mjs),
against real web and worker processes. Assertions are on what the page shows."""

from __future__ import annotations

import json
import re
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from longtask.testing import pdfs
from longtask.testing.fake_openai import FakeOpenAI
from tests.agents import SAMPLE, indexed_sample, script
from tests.conftest import Tenant
from tests.support import SAMPLES, Web, Worker, fake_providers, task_status, wait_for, wait_status
from tests.web.driver import ARTIFACTS, Scenario, browser_or_skip

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def _browser() -> None:
    browser_or_skip()  # before a test starts anything of its own


def _sample_paths(count: int) -> list[str]:
    return [str(SAMPLES / f"{s.filename}.pdf") for s in pdfs.SAMPLES[:count]]


def _clean(seen: dict[str, Any]) -> None:
    assert seen["page_errors"] == []
    assert seen["failed_requests"] == [] and seen["console_errors"] == [], seen


async def test_upload_follow_and_search_in_the_browser(web: Web, live_worker: Worker,
                                                       tenant_a: Tenant) -> None:
    files = _sample_paths(3)
    wanted = pdfs.SAMPLES[1]
    async with Scenario("dashboard.mjs", web, tenant_a.key, DASHBOARD_FILES=json.dumps(files),
                        DASHBOARD_QUERY=wanted.phrase,
                        DASHBOARD_ARTIFACTS=str(ARTIFACTS)) as page:
        seen = await page.seen()

    assert seen["title"] == "longtask" and seen["heading"] == "longtask"
    assert seen["bad_key_error"].startswith("invalid_key:"), seen["bad_key_error"]
    assert seen["key_status"] == f"saved: {tenant_a.key[:6]}…"
    assert seen["rows_at_start"] == 3
    task = seen["task"]
    assert sorted(f["name"] for f in task["files"]) == sorted(f.rsplit("/", 1)[1] for f in files)
    for row in task["files"]:
        assert row["state"] == "completed" and row["percent"] == "100%", row
        assert row["bar"] == f"{row['name']}: 100%"
        # the counters the worker reported, shown as text
        assert re.search(r"pages (\d+)/\1", row["detail"]), row
        assert re.search(r"chunks (\d+)/\1", row["detail"]), row
    assert task["overall"] == "100% · 3 of 3 done"
    assert task["status"] == "completed" and task["live"].startswith("stream ended")
    assert task["cancel_disabled"] is True and task["retry_disabled"] is True
    assert any(t.startswith("ingest") and "completed" in t for t in seen["task_list"])

    first = seen["first_result"]
    assert first["filename"] == f"{wanted.filename}.pdf", first
    pages = [int(n) for n in re.findall(r"\d+", first["pages"].split("·")[0])]
    assert pages and min(pages) <= wanted.phrase_page <= max(pages), first
    assert first["snippet"].strip(), first
    assert seen["error_visible"] is False
    assert seen["phone_overflow_px"] <= 0, "the page scrolls sideways on a phone"
    _clean(seen)
    for shot in ("dashboard.png", "dashboard-phone.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000


async def test_the_page_catches_up_after_the_server_restarts_and_its_token_is_refused(
        make_stack: Any, pool: asyncpg.Pool, redis: Redis) -> None:
    stack = await make_stack()
    gate = "gate:dashboard"
    task_id = (await stack.client.post("/tasks", json={"kind": "test.echo",
                                                       "params": {"gate": gate}})).json()["id"]
    await wait_status(stack.client, task_id, {"running"})
    async with Scenario("reconnect.mjs", stack.web, stack.key) as page:
        assert (await page.message())["following"]
        stack.web.terminate()  # streams end with a retry hint; the browser keeps trying
        await redis.set(gate, 1)

        async def ended() -> int | None:
            row = await pool.fetchrow("SELECT status, last_seq FROM tasks WHERE id = $1",
                                      task_id)
            return row["last_seq"] if row["status"] == "completed" else None

        last_seq = await wait_for(ended, 30, "the task to finish while the web is down")
        # another secret: the stream token the page holds is now refused with a 401
        stack.web.env["LONGTASK_SECRET"] = "rotated-while-the-page-was-open"
        await stack.web.start().ready()
        await page.go()
        seen = await page.seen()

    before, after = seen["before"], seen["after"]
    opened = re.search(r"#(\d+)", before["live"])
    assert opened, before
    first_seq = int(opened.group(1))
    assert before["live"] == f"stream live · last event #{first_seq} · 0 received"
    assert before["status"] == "running" and before["files"][0]["state"] == "running"
    # every event after the snapshot, each exactly once
    assert after["live"] == (f"stream ended · last event #{last_seq} · "
                             f"{last_seq - first_seq} received")
    # when that event was stored (its `at`), as a tooltip in the browser's local time
    assert before["live_title"] in (None, "")
    assert after["live_title"].startswith(f"event #{last_seq} at "), after["live_title"]
    assert "Invalid" not in after["live_title"]
    assert after["status"] == "completed" and after["overall"].startswith("100%")
    assert [(f["state"], f["percent"]) for f in after["files"]] == [("completed", "100%")]
    assert seen["page_errors"] == []
    # the refused token was seen, and nothing else failed
    assert seen["failed_requests"] and set(seen["failed_requests"]) == {
        f"401 /tasks/{task_id}/events"}, seen["failed_requests"]


async def test_cancel_retry_typed_errors_and_filters_in_the_browser(
        web: Web, live_worker: Worker, tenant_a: Tenant, tmp_path: Any) -> None:
    forever = (await tenant_a.client.post("/tasks", json={"kind": "test.forever"})).json()["id"]
    await wait_status(tenant_a.client, forever, {"running"})
    secret = tmp_path / "secret.pdf"
    secret.write_bytes(pdfs.encrypted_pdf())
    files = [*_sample_paths(1), str(secret)]
    async with Scenario("cancel_retry.mjs", web, tenant_a.key, DASHBOARD_FILES=json.dumps(files),
                        DASHBOARD_ARTIFACTS=str(ARTIFACTS)) as page:
        seen = await page.seen()

    canceled = seen["canceled"]
    assert canceled["status"] == "canceled"
    assert [f["state"] for f in canceled["files"]] == ["canceled"]
    assert canceled["cancel_disabled"] is True
    assert (await tenant_a.client.get(f"/tasks/{forever}")).json()["status"] == "canceled"

    batch = seen["batch"]
    states = {f["name"]: f["state"] for f in batch["files"]}
    assert states == {f"{pdfs.SAMPLES[0].filename}.pdf": "completed",
                      "secret.pdf": "failed: encrypted"}, batch
    assert batch["overall"] == "100% · 2 of 2 done"
    assert batch["status"] == "completed · 1 failed"
    assert batch["retry_disabled"] is False

    retried = seen["retried"]
    assert seen["retried_id"] != seen["batch_id"]
    assert retried["status"] == "failed: encrypted"  # one item: the task fails with its error
    assert [(f["name"], f["state"]) for f in retried["files"]] == [("secret.pdf",
                                                                     "failed: encrypted")]
    shown = (await tenant_a.client.get(f"/tasks/{seen['retried_id']}")).json()
    assert shown["retry_of"] == seen["batch_id"]

    # the dead-letter view: the failed retry and the batch with a failed file, not the cancel
    assert len(seen["failed_list"]) == 2
    assert not any("test.forever" in t for t in seen["failed_list"])
    assert len(seen["kind_list"]) == 1 and "canceled" in seen["kind_list"][0]
    assert seen["error_visible"] is False
    _clean(seen)


async def _ask(stack: Any, question: str, screenshot: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the page showed for a question asked in it, and the task as the API has it."""
    async with Scenario("ask.mjs", stack.web, stack.key, ASK_QUESTION=question,
                        DASHBOARD_ARTIFACTS=str(ARTIFACTS), ASK_SCREENSHOT=screenshot) as page:
        seen = await page.seen()
    task = await task_status(stack.client, seen["task_id"])
    assert task["kind"] == "agent" and task["status"] == "completed", task
    assert seen["question"] == question
    assert seen["answer"] == task["result"]["answer"] and seen["answer_busy"] == "false"
    assert seen["citations_title"] is True and seen["citations"] == [
        f"{c['filename']}, p. {c['page']}" for c in task["result"]["citations"]]
    assert seen["error_visible"] is False
    _clean(seen)
    return seen, task


async def test_asking_shows_the_steps_then_the_answer_as_it_is_written(make_stack: Any) -> None:
    with FakeOpenAI(token_delay=0.05) as fake:
        stack = await make_stack(**fake_providers(fake))
        await indexed_sample(stack)
        fake.reply = script
        seen, task = await _ask(stack, "When is the levain ready?", "dashboard-ask.png")

    assert [(s["number"], s["call"].split("(")[0]) for s in seen["steps"]] == [
        ("Step 1", "search"), ("Step 2", "read_pages"), ("Step 3", "read_summary")]
    assert seen["steps"][0]["call"] == f"search({json.dumps(SAMPLE.phrase)})"
    assert seen["steps"][2]["summary"] == f"→ summary of {SAMPLE.filename}.pdf"
    # what the model wrote with its second call moved into that step's line
    assert [s["note"] for s in seen["steps"]] == [None, "Reading the passage.", None]
    assert seen["method"] is None
    answer = task["result"]["answer"]
    assert f"[{SAMPLE.filename}.pdf, p." in answer and seen["citations"]
    # the answer box grew as the text came, and never showed anything but the model's words
    texts = seen["answer_texts"]
    assert all(answer.startswith(t) or "Reading the passage.".startswith(t) for t in texts), texts
    assert len({t for t in texts if t and t != answer and answer.startswith(t)}) >= 2, texts


async def test_asking_without_an_llm_says_the_answer_is_retrieval_only(make_stack: Any) -> None:
    with FakeOpenAI() as fake:  # embeddings only
        stack = await make_stack(**fake_providers(fake, LONGTASK_LLM_URL=""))
        await indexed_sample(stack)
        seen, task = await _ask(stack, SAMPLE.phrase, "dashboard-ask-retrieval.png")

    assert task["result"]["method"] == "retrieval_only"
    assert seen["method"] == ("Retrieval only: no LLM is configured, so these are the passages "
                              "that match best.")
    assert [s["call"] for s in seen["steps"]] == [f"search({json.dumps(SAMPLE.phrase)})"]
    assert seen["citations"][0].startswith(f"{SAMPLE.filename}.pdf, p. ")  # the best passage
