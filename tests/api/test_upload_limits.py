"""Per-tenant storage and metadata limits on uploads: a file that does not fit in the tenant's
quota fails alone as `quota_exceeded` while the rest of the batch goes on, an upload when the
quota is full gets 429, and metadata is capped per request and per document."""

from __future__ import annotations

import json
import os
from typing import Any

import asyncpg
import httpx

from longtask.store.files import PART_BYTES
from longtask.testing.fake_openai import FakeOpenAI
from tests.support import SAMPLES, fake_providers, wait_status

A, B = (SAMPLES / "sourdough.pdf").read_bytes(), (SAMPLES / "water-cycle.pdf").read_bytes()


async def upload(client: httpx.AsyncClient, files: list[tuple[str, bytes]],
                 metadata: dict[str, Any] | None = None) -> httpx.Response:
    data = {"metadata": json.dumps(metadata)} if metadata is not None else None
    return await client.post("/documents", data=data, files=[
        ("files", (name, content, "application/pdf")) for name, content in files])


async def outcomes(client: httpx.AsyncClient, answer: httpx.Response) -> list[str]:
    assert answer.status_code == 202, answer.text
    task = await wait_status(client, answer.json()["id"], {"completed", "failed"}, timeout=60)
    return [(i["result"] or {}).get("status") or i["error"]["code"] for i in task["items"]]


async def stored(pool: asyncpg.Pool, tenant: str = "tenant-a") -> int:
    counted = await pool.fetchval("SELECT bytes FROM tenant_storage WHERE tenant = $1", tenant)
    actual = await pool.fetchval("SELECT coalesce(sum(size), 0) FROM files WHERE tenant = $1",
                                 tenant)
    assert counted == actual  # the count is what the files hold
    return int(counted)


async def test_a_file_past_the_storage_quota_fails_alone_and_a_full_quota_answers_429(
        make_stack: Any, pool: asyncpg.Pool) -> None:
    quota = len(A) + len(B) + PART_BYTES
    with FakeOpenAI() as fake:
        stack = await make_stack(**fake_providers(fake), LONGTASK_MAX_TENANT_BYTES=str(quota))
        client = stack.client
        # the big file's first part fits, its second does not: it is dropped, its first part
        # given back, and the file after it still fits
        big = b"%PDF-1.7\n" + os.urandom(PART_BYTES + PART_BYTES // 2)
        first = await upload(client, [("a.pdf", A), ("big.pdf", big), ("b.pdf", B)])
        assert await outcomes(client, first) == ["indexed", "quota_exceeded", "indexed"]
        failed = (await client.get(f"/tasks/{first.json()['id']}")).json()["items"][1]["error"]
        assert str(quota) in failed["message"]
        assert await stored(pool) == len(A) + len(B)

        # exactly what is left: stored (and not a PDF, which its item says); the quota is full
        rest = os.urandom(quota - len(A) - len(B))
        filler = await upload(client, [("rest.pdf", rest)])
        assert await outcomes(client, filler) == ["unsupported_type"]
        assert await stored(pool) == quota
        stats = (await client.get("/stats")).json()
        assert stats["storage"] == {"bytes": quota, "quota": quota}
        files_before = await pool.fetchval("SELECT count(*) FROM files")
        full = await upload(client, [("c.pdf", b"%PDF-1.7\n")])
        assert full.status_code == 429 and full.json()["error"] == "quota_exceeded"
        assert int(full.headers["retry-after"]) > 0 and "delete documents" in full.json()["detail"]
        assert await pool.fetchval("SELECT count(*) FROM files") == files_before  # nothing kept

        # deleting a document makes room at once
        document = filler.json()["documents"][0]["document_id"]
        assert (await client.delete(f"/documents/{document}")).status_code == 204
        assert await stored(pool) == len(A) + len(B)
        again = await upload(client, [("c.pdf", (SAMPLES / "bicycle-history.pdf").read_bytes())])
        assert await outcomes(client, again) == ["indexed"]


async def test_metadata_is_capped_per_upload_and_per_document(make_stack: Any,
                                                              pool: asyncpg.Pool) -> None:
    with FakeOpenAI() as fake:
        stack = await make_stack(**fake_providers(fake), LONGTASK_MAX_METADATA_BYTES="200")
        client = stack.client
        too_much = await upload(client, [("a.pdf", A)], {"notes": "x" * 300})
        assert too_much.status_code == 413 and too_much.json()["error"] == "metadata_too_large"
        assert "200" in too_much.json()["detail"]
        assert await pool.fetchval("SELECT count(*) FROM files") == 0  # refused before storing

        first = await upload(client, [("a.pdf", A)], {"team": "bread", "notes": "y" * 100})
        assert await outcomes(client, first) == ["indexed"]
        document = first.json()["documents"][0]["document_id"]
        # a re-upload merges its keys in: past 200 bytes the file fails alone, the document is
        # left as it was, and the other file of the upload goes on
        grown = await upload(client, [("a.pdf", A), ("b.pdf", B)], {"more": "z" * 100})
        assert await outcomes(client, grown) == ["metadata_too_large", "indexed"]
        shown = (await client.get(f"/documents/{document}")).json()
        assert shown["metadata"] == {"team": "bread", "notes": "y" * 100}
        # keys that replace others keep it under the cap: that merges
        replaced = await upload(client, [("a.pdf", A)], {"notes": "w" * 100, "year": 2026})
        assert await outcomes(client, replaced) == ["unchanged"]
        shown = (await client.get(f"/documents/{document}")).json()
        assert shown["metadata"] == {"team": "bread", "notes": "w" * 100, "year": 2026}
