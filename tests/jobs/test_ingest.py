"""Ingestion end to end: upload a batch, watch each file's stages, search what was indexed."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from longtask.testing import pdfs
from longtask.testing.fake_openai import FakeOpenAI
from tests.conftest import Tenant
from tests.support import SAMPLES, Worker, sse_events, task_status, wait_for, wait_status

STAGES = ["validate", "parse", "chunk", "summarise", "embed", "store"]


def sample_files() -> list[tuple[str, bytes]]:
    return [(f"{s.filename}.pdf", (SAMPLES / f"{s.filename}.pdf").read_bytes())
            for s in pdfs.SAMPLES[:3]]


def as_upload(files: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/pdf")) for name, data in files]


async def ingest(client: httpx.AsyncClient, files: list[tuple[str, bytes]],
                 **form: str) -> dict[str, Any]:
    response = await client.post("/documents", files=as_upload(files), data=form)
    assert response.status_code == 202, response.text
    return dict(response.json())


async def test_a_batch_with_bad_files_indexes_the_good_ones(tenant_a: Tenant,
                                                            live_worker: Worker) -> None:
    files = sample_files() + [("broken.pdf", pdfs.corrupt_pdf()),
                              ("secret.pdf", pdfs.encrypted_pdf())]
    submitted = await ingest(tenant_a.client, files)
    events = await sse_events(tenant_a.client, submitted["id"], timeout=120)
    task = await task_status(tenant_a.client, submitted["id"])
    assert task["status"] == "completed"
    outcomes = {o["name"]: o for o in task["result"]["items"]}
    assert {n: o["status"] for n, o in outcomes.items()} == {
        **{name: "completed" for name, _ in files[:3]},
        "broken.pdf": "failed", "secret.pdf": "failed"}
    assert outcomes["broken.pdf"]["error"]["code"] == "corrupt"
    assert outcomes["secret.pdf"]["error"]["code"] == "encrypted"
    for name, _ in files[:3]:
        result = outcomes[name]["result"]
        assert result["status"] == "indexed" and result["chunks"] > 0 and result["pages"] >= 3
        assert result["summary_method"] == "extractive"  # no LLM configured, and it says so
        stages = [d["stage"] for _, e, d in events if e == "progress" and d["name"] == name]
        assert _dedupe(stages) == STAGES  # each stage, in order
        parse = [d for _, e, d in events if e == "progress" and d["name"] == name
                 and d["stage"] == "parse"]
        assert parse[-1]["pages"] == parse[-1]["pages_total"] == result["pages"]
        embed = [d for _, e, d in events if e == "progress" and d["name"] == name
                 and d["stage"] == "embed"]
        assert embed[-1]["chunks"] == embed[-1]["chunks_total"] == result["chunks"]
    docs = (await tenant_a.client.get("/documents")).json()["documents"]
    assert sorted(d["status"] for d in docs) == ["failed", "failed", "indexed", "indexed",
                                                 "indexed"]


async def test_search_finds_the_sample_a_phrase_comes_from(tenant_a: Tenant,
                                                           live_worker: Worker) -> None:
    submitted = await ingest(tenant_a.client, sample_files())
    await wait_status(tenant_a.client, submitted["id"], {"completed"}, timeout=120)
    for sample in pdfs.SAMPLES[:3]:
        found = (await tenant_a.client.get("/search", params={"q": sample.phrase, "k": 3})).json()
        best = found["results"][0]
        assert found["model"] == "all-MiniLM-L6-v2"
        assert best["filename"] == f"{sample.filename}.pdf", (sample.phrase, found)
        assert best["page_start"] <= sample.phrase_page <= best["page_end"]
        assert best["score"] > found["results"][-1]["score"] or len(found["results"]) == 1


async def test_the_same_bytes_again_are_not_embedded_again(tenant_a: Tenant, live_worker: Worker,
                                                           pool: asyncpg.Pool) -> None:
    files = sample_files()[:1]
    first = await ingest(tenant_a.client, files)
    await wait_status(tenant_a.client, first["id"], {"completed"}, timeout=120)
    chunks = await pool.fetchval("SELECT count(*) FROM chunks")
    again = await ingest(tenant_a.client, [("renamed.pdf", files[0][1])])
    task = await wait_status(tenant_a.client, again["id"], {"completed"}, timeout=60)
    assert task["result"]["status"] == "unchanged"
    assert again["documents"][0]["document_id"] == first["documents"][0]["document_id"]
    forced = await ingest(tenant_a.client, files, reindex="true")
    task = await wait_status(tenant_a.client, forced["id"], {"completed"}, timeout=120)
    assert task["result"]["status"] == "indexed"
    # reindexed: the new generation replaced the old chunks, it did not add to them
    assert await pool.fetchval("SELECT count(*) FROM chunks") == chunks
    assert await pool.fetchval("SELECT count(DISTINCT generation) FROM chunks") == 1
    assert await pool.fetchval("SELECT count(*) FROM files") == 1


async def test_typed_errors_for_scans_and_non_pdfs(tenant_a: Tenant, live_worker: Worker) -> None:
    files = [("scan.pdf", pdfs.scanned_pdf()), ("image.pdf", pdfs.not_a_pdf()),
             ("notes.pdf", pdfs.pdf_named_but_text())]
    submitted = await ingest(tenant_a.client, files)
    task = await wait_status(tenant_a.client, submitted["id"], {"completed", "failed"},
                             timeout=60)
    assert task["status"] == "failed"  # every file failed: nothing to show for the batch
    codes = {o["name"]: o["error"]["code"] for o in task["result"]["items"]}
    assert codes == {"scan.pdf": "empty", "image.pdf": "unsupported_type",
                     "notes.pdf": "unsupported_type"}


@pytest.mark.timeout(300)  # waits up to 240 s for 300 pages to be embedded on a busy machine
async def test_the_loop_keeps_moving_while_a_long_pdf_parses(tenant_a: Tenant,
                                                             live_worker: Worker,
                                                             pool: asyncpg.Pool) -> None:
    big = await ingest(tenant_a.client, [("long.pdf", pdfs.many_pages_pdf(300))])

    async def parsing() -> Any:
        return await pool.fetchrow(
            "SELECT id, lease_expires_at FROM task_items WHERE task_id = $1 AND stage = 'parse'"
            " AND status = 'running'", big["id"])

    first = await wait_for(parsing, timeout=60, what="the long PDF to be parsing")
    small = (await tenant_a.client.post("/tasks", json={"kind": "test.echo"})).json()["id"]
    await wait_status(tenant_a.client, small, {"completed"}, timeout=30)

    async def renewed() -> bool:  # the same worker renewed the big item's lease meanwhile
        lease = await pool.fetchval("SELECT lease_expires_at FROM task_items WHERE id = $1",
                                    first["id"])
        return lease > first["lease_expires_at"]

    await wait_for(renewed, timeout=10, what="a heartbeat during the parse")
    big_item = (await task_status(tenant_a.client, big["id"]))["items"][0]
    assert big_item["status"] == "running"  # the small task finished while the big one ran
    task = await wait_status(tenant_a.client, big["id"], {"completed", "failed"}, timeout=240)
    assert task["status"] == "completed" and task["result"]["pages"] == 300


async def test_documents_show_and_delete(tenant_a: Tenant, tenant_b: Tenant,
                                         live_worker: Worker) -> None:
    submitted = await ingest(tenant_a.client, sample_files()[:1])
    await wait_status(tenant_a.client, submitted["id"], {"completed"}, timeout=120)
    doc_id = submitted["documents"][0]["document_id"]
    doc = (await tenant_a.client.get(f"/documents/{doc_id}")).json()
    sample = pdfs.SAMPLES[0]
    assert doc["status"] == "indexed" and doc["pages"] == len(sample.pages)
    assert sample.phrase in " ".join(doc["page_texts"][sample.phrase_page - 1].split())
    assert doc["summary"]["method"] == "extractive" and doc["summary"]["text"]
    assert doc["embedding_model"] == "all-MiniLM-L6-v2" and doc["embedding_dim"] == 384
    assert [c["idx"] for c in doc["chunks"]] == list(range(doc["chunk_count"]))
    assert doc["chunks"][-1]["page_end"] == doc["pages"]
    assert (await tenant_b.client.get(f"/documents/{doc_id}")).status_code == 404
    assert (await tenant_b.client.delete(f"/documents/{doc_id}")).status_code == 404
    theirs = (await tenant_b.client.get("/search", params={"q": sample.phrase})).json()
    assert theirs["results"] == []  # another tenant's chunks are never found
    assert (await tenant_a.client.delete(f"/documents/{doc_id}")).status_code == 204
    assert (await tenant_a.client.get(f"/documents/{doc_id}")).status_code == 404
    found = (await tenant_a.client.get("/search", params={"q": sample.phrase})).json()
    assert found["results"] == []


async def test_upload_limits_and_bad_requests(make_stack: Any) -> None:
    stack = await make_stack(workers=0, LONGTASK_MAX_FILES="2",
                             LONGTASK_MAX_REQUEST_BYTES="200000")
    client = stack.client
    one = sample_files()[:1]
    cases = [
        (await client.post("/documents", files=as_upload(one * 3)), 422, "too_many_files"),
        (await client.post("/documents", files=as_upload([("big.pdf", b"%PDF-" + b"x" * 300_000)])),
         413, "too_large"),
        (await client.post("/documents", data={"note": "no files"},
                           files=[("other", ("x.txt", b"x", "text/plain"))]), 422, "no_files"),
        (await client.post("/documents", json={"files": []}), 400, "invalid_multipart"),
        (await client.post("/documents", files=as_upload(one), data={"metadata": "[1]"}), 400,
         "invalid_metadata"),
        (await client.get("/search"), 400, "invalid_query"),
        (await client.get("/search", params={"q": "x" * 3000}), 400, "invalid_query"),
        (await client.get("/search", params={"q": "x", "k": "0"}), 400, "invalid_query"),
        (await client.get("/documents/not-an-id"), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.json()["error"]) == (status, code), response.text


async def test_per_file_limits_are_typed_errors(make_stack: Any) -> None:
    stack = await make_stack(LONGTASK_MAX_FILE_BYTES="300000", LONGTASK_MAX_PAGES="100")
    files = [("huge.pdf", pdfs.many_pages_pdf(400)), ("long.pdf", pdfs.many_pages_pdf(120)),
             ("ok.pdf", sample_files()[0][1])]
    assert len(files[0][1]) > 300_000 > len(files[1][1])
    submitted = await ingest(stack.client, files)
    task = await wait_status(stack.client, submitted["id"], {"completed", "failed"}, timeout=120)
    outcomes = {o["name"]: o for o in task["result"]["items"]}
    assert outcomes["huge.pdf"]["error"]["code"] == "too_large"
    assert outcomes["long.pdf"]["error"]["code"] == "too_many_pages"
    assert outcomes["ok.pdf"]["status"] == "completed"
    assert task["status"] == "completed"


def _dedupe(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out


async def test_with_an_llm_and_an_embeddings_endpoint(make_stack: Any,
                                                      pool: asyncpg.Pool) -> None:
    with FakeOpenAI() as fake:
        stack = await make_stack(LONGTASK_LLM_URL=fake.base_url, LONGTASK_EMBED_URL=fake.base_url,
                                 LONGTASK_EMBED_MODEL="fake-embed", LONGTASK_LLM_MODEL="fake-chat")
        fake.fail_next("429", retry_after=1)  # the first call is told to wait, and it does
        submitted = await ingest(stack.client, sample_files()[:2])
        task = await wait_status(stack.client, submitted["id"], {"completed", "failed"},
                                 timeout=120)
        assert task["status"] == "completed"
        doc_id = submitted["documents"][1]["document_id"]
        doc = (await stack.client.get(f"/documents/{doc_id}")).json()
        assert doc["summary"]["method"] == "llm" and doc["summary"]["model"] == "fake-chat"
        assert doc["summary"]["text"].startswith("Summary: ")
        assert (doc["embedding_model"], doc["embedding_dim"]) == ("fake-embed", 384)
        sample = pdfs.SAMPLES[1]
        found = (await stack.client.get("/search", params={"q": sample.phrase})).json()
        assert found["model"] == "fake-embed"
        assert found["results"][0]["filename"] == f"{sample.filename}.pdf"
        assert fake.calls("/v1/chat/completions") == 3  # two documents, one 429
        assert await pool.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'chunks'"
            " AND indexdef LIKE '%fake-embed%'") == 1


async def test_a_retry_in_the_middle_of_embedding_resumes_without_duplicates(
        make_stack: Any, pool: asyncpg.Pool) -> None:
    with FakeOpenAI() as fake:
        stack = await make_stack(LONGTASK_EMBED_URL=fake.base_url, LONGTASK_EMBED_MODEL="fake",
                                 LONGTASK_EMBED_BATCH="2", LONGTASK_CHUNK_TOKENS="60",
                                 LONGTASK_CHUNK_OVERLAP="10")
        # the first batch goes through; the second fails for longer than the in-call retries
        fake.fail_next("500", count=4, after=1)
        submitted = await ingest(stack.client, sample_files()[:1])
        task = await wait_status(stack.client, submitted["id"], {"completed", "failed"},
                                 timeout=120)
        assert task["status"] == "completed"
        item = task["items"][0]
        assert item["attempts"] == 2  # the item itself was retried
        chunks = item["result"]["chunks"]
        assert chunks > 4  # three batches of 2 at least
        rows = await pool.fetch("SELECT idx, generation FROM chunks ORDER BY idx")
        assert [r["idx"] for r in rows] == list(range(chunks))  # each chunk once
        assert len({r["generation"] for r in rows}) == 1
        batches = -(-chunks // 2)
        # batch 1 was not embedded again after the retry: only the failures were extra calls
        assert fake.calls("/v1/embeddings") == batches + 4
        embed = await sse_events(stack.client, submitted["id"])
        retried = [d for _, e, d in embed if e == "item" and d["status"] == "retrying"]
        assert len(retried) == 1 and retried[0]["error"]["code"] == "embeddings_unavailable"
