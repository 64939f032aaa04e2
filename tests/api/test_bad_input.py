"""A corpus of bad input. Each request gets a clear 4xx with {"error", "detail"}; each bad file
in an upload gets a typed per-file error while the good files of the same batch are indexed;
and the server stays up throughout."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from longtask.testing import pdfs
from longtask.testing.fake_openai import FakeOpenAI
from tests.conftest import Tenant
from tests.support import SAMPLES, fake_providers, wait_status

MISSING = str(uuid.uuid4())
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # "{task}" stands for an existing task of the tenant
    status: int
    error: str
    options: dict[str, Any] = field(default_factory=dict)
    anonymous: bool = False  # send no key


def multipart(parts: list[tuple[bytes, bytes, bytes]], boundary: bytes = b"xyzzy") -> dict[str, Any]:
    """A multipart/form-data body built by hand from (field, filename or b"", content): to send
    what httpx would refuse to (filenames that are not UTF-8, malformed framing)."""
    body = b""
    for name, filename, content in parts:
        disposition = b'form-data; name="' + name + b'"'
        if filename:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n"
        body += content + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    return {"content": body,
            "headers": {"Content-Type": "multipart/form-data; boundary=" + boundary.decode()}}


def _cursor(when: str) -> str:
    """A cursor as the server makes them, around a time of the caller's choosing."""
    return base64.urlsafe_b64encode(f"{when}|{uuid.uuid4()}".encode()).decode().rstrip("=")


CASES: dict[str, Case] = {
    # authentication
    "no key": Case("GET", "/tasks", 401, "missing_key", anonymous=True),
    "wrong key": Case("GET", "/tasks", 401, "invalid_key",
                      {"headers": {"Authorization": "Bearer lt_wrong"}}),
    "bearer without a key": Case("GET", "/tasks", 401, "missing_key",
                                 {"headers": {"Authorization": "Bearer"}}),
    "basic auth": Case("GET", "/tasks", 401, "missing_key",
                       {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}}),
    "10k-char key": Case("GET", "/tasks", 401, "invalid_key",
                         {"headers": {"Authorization": "Bearer " + "k" * 10_000}}),
    # submitting
    "not JSON": Case("POST", "/tasks", 400, "invalid_json", {"content": b"{kind:", "headers": JSON}),
    "non-UTF-8 body": Case("POST", "/tasks", 400, "invalid_json",
                           {"content": b'{"kind": "\xff\xfe"}', "headers": JSON}),
    "JSON array": Case("POST", "/tasks", 400, "invalid_input", {"json": ["test.echo"]}),
    "deeply nested JSON": Case("POST", "/tasks", 400, "invalid_json",
                               {"content": b"[" * 100_000 + b"]" * 100_000, "headers": JSON}),
    "oversized JSON": Case("POST", "/tasks", 413, "too_large",
                           {"json": {"kind": "test.echo", "params": {"x": "a" * 300_000}}}),
    "no kind": Case("POST", "/tasks", 400, "invalid_kind", {"json": {"params": {}}}),
    "kind not a string": Case("POST", "/tasks", 400, "invalid_kind", {"json": {"kind": 7}}),
    "unknown kind": Case("POST", "/tasks", 422, "unknown_kind", {"json": {"kind": "rm -rf"}}),
    "internal kind": Case("POST", "/tasks", 422, "unknown_kind", {"json": {"kind": "ingest"}}),
    "bad fan-out params": Case("POST", "/tasks", 422, "invalid_params",
                               {"json": {"kind": "test.fanout", "params": {"items": 5}}}),
    "agent without a question": Case("POST", "/tasks", 422, "invalid_params",
                                     {"json": {"kind": "agent", "params": {"question": " "}}}),
    "agent with 99 steps": Case("POST", "/tasks", 422, "invalid_params", {
        "json": {"kind": "agent", "params": {"question": "why?", "max_steps": 99}}}),
    "negative deadline": Case("POST", "/tasks", 400, "invalid_deadline",
                              {"json": {"kind": "test.echo", "deadline_seconds": -1}}),
    "deadline as text": Case("POST", "/tasks", 400, "invalid_deadline",
                             {"json": {"kind": "test.echo", "deadline_seconds": "soon"}}),
    "10k-char idempotency key": Case("POST", "/tasks", 400, "invalid_idempotency_key", {
        "json": {"kind": "test.echo"}, "headers": {"Idempotency-Key": "i" * 10_000}}),
    # listing
    "negative limit": Case("GET", "/tasks?limit=-1", 400, "invalid_query"),
    "huge limit": Case("GET", "/tasks?limit=" + "9" * 40, 400, "invalid_query"),
    "limit as text": Case("GET", "/tasks?limit=ten", 400, "invalid_query"),
    "unknown status": Case("GET", "/tasks?status=sleeping", 400, "invalid_query"),
    "forged cursor": Case("GET", "/tasks?cursor=bm90IGEgY3Vyc29y", 400, "invalid_cursor"),
    "cursor of junk": Case("GET", "/tasks?cursor=%00%ff", 400, "invalid_cursor"),
    "documents limit 0": Case("GET", "/documents?limit=0", 400, "invalid_query"),
    # ids
    "id not a uuid": Case("GET", "/tasks/not-a-uuid", 404, "not_found"),
    "SQL in an id": Case("GET", "/tasks/1'%20OR%20'1'='1", 404, "not_found"),
    "unknown id": Case("GET", f"/tasks/{MISSING}", 404, "not_found"),
    "cancel unknown": Case("POST", f"/tasks/{MISSING}/cancel", 404, "not_found"),
    "document id not a uuid": Case("GET", "/documents/..%2F..%2Fetc%2Fpasswd", 404, "not_found"),
    # event streams
    "negative Last-Event-ID": Case("GET", "/tasks/{task}/events", 400, "invalid_query",
                                   {"headers": {"Last-Event-ID": "-5"}}),
    "Last-Event-ID as text": Case("GET", "/tasks/{task}/events", 400, "invalid_query",
                                  {"headers": {"Last-Event-ID": "abc"}}),
    "huge after": Case("GET", "/tasks/{task}/events?after=" + "9" * 30, 400, "invalid_query"),
    "forged stream token": Case("GET", "/tasks/{task}/events?token=abc.def", 401,
                                "invalid_token", anonymous=True),
    # search
    "search without q": Case("GET", "/search", 400, "invalid_query"),
    "oversized query": Case("GET", "/search?q=" + "word%20" * 1000, 400, "invalid_query"),
    "k of zero": Case("GET", "/search?q=bread&k=0", 400, "invalid_query"),
    "search in a bad document id": Case("GET", "/search?q=bread&document_id=1;DROP", 404,
                                        "not_found"),
    # uploads
    "upload as JSON": Case("POST", "/documents", 400, "invalid_multipart",
                           {"json": {"files": ["a.pdf"]}}),
    "multipart without boundary": Case("POST", "/documents", 400, "invalid_multipart", {
        "content": b"--x\r\n\r\n", "headers": {"Content-Type": "multipart/form-data"}}),
    "multipart with no files": Case("POST", "/documents", 422, "no_files",
                                    multipart([(b"metadata", b"", b"{}")])),
    "metadata not JSON": Case("POST", "/documents", 400, "invalid_metadata", multipart(
        [(b"files", b"a.pdf", b"%PDF-1.7"), (b"metadata", b"", b"{oops")])),
    "deeply nested metadata": Case("POST", "/documents", 400, "invalid_metadata", multipart(
        [(b"files", b"a.pdf", b"%PDF-1.7"), (b"metadata", b"", b"[" * 50_000)])),
    "20 KB of metadata": Case("POST", "/documents", 413, "metadata_too_large", multipart(
        [(b"files", b"a.pdf", b"%PDF-1.7"),
         (b"metadata", b"", b'{"notes": "' + b"n" * 20_000 + b'"}')])),  # copied into each file
    "10,000-char file name": Case("POST", "/documents", 400, "invalid_multipart", multipart(
        [(b"files", b"x" * 10_000 + b".pdf", b"%PDF-1.7")])),  # part headers are capped at 4 KB
    # schedules
    "a schedule every second": Case("POST", "/schedules", 422, "cron_too_frequent", {
        "json": {"kind": "test.echo", "cron": "* * * * * *"}}),  # the tests' minimum is 2 s
    # the rest
    # what Postgres cannot store or compare (each answered 500 once)
    "NUL in params": Case("POST", "/tasks", 400, "invalid_input",
                          {"json": {"kind": "test.echo", "params": {"note": "a\u0000b"}}}),
    "NUL in a params key": Case("POST", "/tasks", 400, "invalid_input",
                                {"json": {"kind": "test.echo", "params": {"a\u0000": 1}}}),
    "NUL in a kind filter": Case("GET", "/tasks?kind=demo%00", 400, "invalid_query"),
    "NUL in a schedule": Case("POST", "/schedules", 400, "invalid_input", {"json": {
        "kind": "test.echo", "cron": "0 * * * *", "params": {"note": ["ok", "a\u0000"]}}}),
    "NUL in metadata": Case("POST", "/documents", 400, "invalid_metadata", multipart(
        [(b"files", b"a.pdf", b"%PDF-1.4"), (b"metadata", b"", b'{"team": "a\\u0000"}')])),
    "cursor before Postgres's time": Case(
        "GET", "/tasks?cursor=" + _cursor("0001-01-01T00:00:00+14:00"), 400, "invalid_cursor"),
    "cursor past Python's time": Case(
        "GET", "/tasks?cursor=" + _cursor("9999-12-31T23:59:59-14:00"), 400, "invalid_cursor"),
    "naive cursor": Case("GET", "/tasks?cursor=" + _cursor("2026-01-01T00:00:00"), 400,
                         "invalid_cursor"),
    "stream token with a non-ASCII signature": Case(
        "GET", "/tasks/{task}/events?token=abc.%C3%A9t%C3%A9", 401, "invalid_token",
        anonymous=True),
    "agent over documents that are no ids": Case("POST", "/tasks", 422, "invalid_params", {
        "json": {"kind": "agent", "params": {"question": "q", "document_ids": ["x"]}}}),
    "agent over 6,000 documents": Case("POST", "/tasks", 422, "invalid_params", {
        "json": {"kind": "agent", "params": {"question": "q", "document_ids": [
            str(uuid.UUID(int=n)) for n in range(6000)]}}}),
    # params that do not fit their kind's declared schema: refused at submit, never a task
    # that fails later in a worker (tests/api/test_params.py checks each detail)
    "demo with 10,001 steps": Case("POST", "/tasks", 422, "invalid_params", {
        "json": {"kind": "demo", "params": {"steps": 10_001, "delay": 60}}}),
    "demo with a delay as text": Case("POST", "/tasks", 422, "invalid_params", {
        "json": {"kind": "demo", "params": {"delay": "1s"}}}),
    "noop with params": Case("POST", "/tasks", 422, "invalid_params", {
        "json": {"kind": "noop", "params": {"x": 1}}}),
    "generate with neither prompts nor documents": Case("POST", "/tasks", 422, "invalid_params",
                                                        {"json": {"kind": "generate"}}),
    "generate with prompts not text": Case("POST", "/tasks", 422, "invalid_params", {
        "json": {"kind": "generate", "params": {"prompts": [{"text": "hi"}]}}}),
    "agent with a list for a question": Case("POST", "/tasks", 422, "invalid_params", {
        "json": {"kind": "agent", "params": {"question": ["why?"]}}}),
    "user kind with params off its schema": Case("POST", "/tasks", 422, "invalid_params", {
        "json": {"kind": "test.typed", "params": {"colour": "red", "count": 0}}}),
    "schedule with params off the schema": Case("POST", "/schedules", 422, "invalid_params", {
        "json": {"kind": "demo", "params": {"steps": 0}, "cron": "0 * * * *"}}),
    "NaN in params": Case("POST", "/tasks", 400, "invalid_json", {  # once a 500: not JSON,
        # though Python's json reads it, and no minimum or maximum catches a NaN
        "content": b'{"kind": "demo", "params": {"delay": NaN}}', "headers": JSON}),
    "Infinity in a schedule's params": Case("POST", "/schedules", 400, "invalid_json", {
        "content": b'{"kind": "test.echo", "cron": "0 * * * *", "params": {"x": -Infinity}}',
        "headers": JSON}),
    "NaN in metadata": Case("POST", "/documents", 400, "invalid_metadata", multipart(
        [(b"files", b"a.pdf", b"%PDF-1.4"), (b"metadata", b"", b'{"team": NaN}')])),
    "method not allowed": Case("PUT", "/tasks", 405, "method_not_allowed"),
    "unknown path": Case("GET", "/wp-admin.php", 404, "not_found"),
}


@pytest.fixture
async def a_task(tenant_a: Tenant) -> str:
    return str((await tenant_a.client.post("/tasks", json={"kind": "test.echo",
                                                          "params": {"gate": "never"}})).json()["id"])


@pytest.mark.parametrize("name", list(CASES))
async def test_each_bad_request_gets_a_clear_4xx(name: str, tenant_a: Tenant, a_task: str) -> None:
    case = CASES[name]
    options = dict(case.options)
    headers = httpx.Headers() if case.anonymous else httpx.Headers(tenant_a.client.headers)
    headers.update(options.pop("headers", {}))  # case-insensitively: replaces the key if given
    async with httpx.AsyncClient(base_url=str(tenant_a.client.base_url), timeout=30) as client:
        answer = await client.request(case.method, case.path.replace("{task}", a_task),
                                      headers=headers, **options)
        assert (answer.status_code, answer.json()["error"]) == (case.status, case.error)
        assert isinstance(answer.json()["detail"], str) and answer.json()["detail"]
        assert (await client.get("/health")).status_code == 200  # still up
    await tenant_a.client.post(f"/tasks/{a_task}/cancel")


def _good(sample: pdfs.Sample) -> bytes:
    return (SAMPLES / f"{sample.filename}.pdf").read_bytes()


# filename -> (content, the outcome: "indexed" or a typed error code)
FILES: dict[bytes, tuple[Callable[[], bytes], str]] = {
    b"good.pdf": (lambda: _good(pdfs.SAMPLES[0]), "indexed"),
    b"zero-byte.pdf": (lambda: b"", "empty"),
    b"truncated.pdf": (pdfs.truncated_pdf, "indexed"),  # repaired: what survives is indexed
    b"encrypted.pdf": (pdfs.encrypted_pdf, "encrypted"),
    b"corrupt.pdf": (pdfs.corrupt_pdf, "corrupt"),
    b"image-named.pdf": (pdfs.not_a_pdf, "unsupported_type"),
    b"notes-named.pdf": (pdfs.pdf_named_but_text, "unsupported_type"),
    b"scanned.pdf": (pdfs.scanned_pdf, "empty"),
    b"absurd-page-count.pdf": (pdfs.absurd_page_count_pdf, "corrupt"),
    b"sixty-pages.pdf": (lambda: pdfs.many_pages_pdf(60, words_per_page=20), "too_many_pages"),
    b"bomb.pdf": (lambda: pdfs.form_bomb_pdf(7), "timeout"),  # ~50 s to parse; the limit is 3
    b"../../etc/passwd": (lambda: _good(pdfs.SAMPLES[1]), "indexed"),
    b"x" * 1_000 + b".pdf": (lambda: _good(pdfs.SAMPLES[2]), "indexed"),  # cut to 200
    b"caf\xe9-latin1-\xff.pdf": (lambda: _good(pdfs.SAMPLES[3]), "indexed"),
}


async def test_a_batch_of_bad_files_fails_each_alone_and_indexes_the_good(
        make_stack: Any) -> None:
    with FakeOpenAI() as fake:
        stack = await make_stack(**fake_providers(fake), LONGTASK_MAX_PAGES="50",
                                 LONGTASK_PARSE_TIMEOUT="3", LONGTASK_PARSE_PROCESSES="1")
        upload = await stack.client.post("/documents", **multipart(
            [(b"files", name, make()) for name, (make, _) in FILES.items()]))
        assert upload.status_code == 202, upload.text
        names = [d["filename"] for d in upload.json()["documents"]]
        assert all("/" not in n and ".." not in n.strip(".") and len(n) <= 200 for n in names)
        task = await wait_status(stack.client, upload.json()["id"], {"completed", "failed"},
                                 timeout=120)
        assert task["status"] == "completed"
        outcomes = [(i["result"] or {}).get("status") or i["error"]["code"]
                    for i in task["items"]]
        assert outcomes == [expected for _, expected in FILES.values()]
        for item in task["items"]:
            if item["status"] == "failed":
                assert item["error"]["message"]  # a sentence for the user, not just a code
        good = [i["result"]["document_id"] for i in task["items"] if i["status"] == "completed"]
        for document_id in good:
            shown = (await stack.client.get(f"/documents/{document_id}")).json()
            assert shown["status"] == "indexed" and shown["chunk_count"] > 0
        assert (await stack.client.get("/health")).status_code == 200


async def test_sql_metacharacters_in_a_search_are_just_text(tenant_a: Tenant,
                                                            live_worker: Any) -> None:
    query = "'; DROP TABLE chunks; -- \\ %_ $1 \x00"
    answer = await tenant_a.client.get("/search", params={"q": query, "k": 3})
    assert answer.status_code == 200 and answer.json()["results"] == []
    assert (await tenant_a.client.get("/documents")).status_code == 200  # the tables are there


async def test_a_huge_declared_body_is_refused_before_it_is_read(tenant_a: Tenant) -> None:
    """Content-Length of a terabyte, nothing sent: 413 at once (httpx will not send such a lie,
    so this speaks HTTP over a plain socket)."""
    url = httpx.URL(str(tenant_a.client.base_url))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(b"POST /documents HTTP/1.1\r\nHost: test\r\n"
                     b"Authorization: " + tenant_a.client.headers["authorization"].encode() +
                     b"\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     b"Content-Length: 1099511627776\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            status = await reader.readline()
            head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
            length = int(head.split("content-length: ")[1].split("\r\n")[0])
            body = json.loads(await reader.readexactly(length))
    finally:
        writer.close()
    assert status.startswith(b"HTTP/1.1 413") and body["error"] == "too_large"
