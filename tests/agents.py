"""A scripted agent run for the tests: the model's side of a three-tool run over two indexed
samples, for the project's OpenAI-compatible test server (`FakeOpenAI.reply = script`)."""

from __future__ import annotations

import json
from typing import Any

from longtask.testing import pdfs
from tests.support import SAMPLES, wait_status

SAMPLE = pdfs.SAMPLES[1]
ANSWER = "The levain should double within six hours, then it is ready for mixing"


def script(messages: list[dict[str, Any]]) -> str | dict[str, Any]:
    """The model's side of a three-tool run: search, read the pages, read the summary, answer."""
    results = [json.loads(m["content"]) for m in messages if m["role"] == "tool"]
    if not results:
        return {"tool_calls": [{"name": "search", "arguments": {"query": SAMPLE.phrase}}]}
    best = results[0][0]
    if len(results) == 1:
        return {"content": "Reading the passage.", "tool_calls": [{"name": "read_pages", "arguments": {
            "document_id": best["document_id"], "first": best["page_start"]}}]}
    if len(results) == 2:
        return {"tool_calls": [{"name": "read_summary",
                                "arguments": {"document_id": best["document_id"]}}]}
    return f"{ANSWER} [{best['filename']}, p. {best['page_start']}]."


def step_of(body: Any) -> int:
    """Which step an LLM request is for: 1 + the tool results it carries; 0 while the test
    server has listed the request but not read its body yet (seen in a busy full run)."""
    if not isinstance(body, dict):
        return 0
    return 1 + sum(1 for m in body["messages"] if m["role"] == "tool")


async def indexed_sample(stack: Any) -> dict[str, str]:
    """Index SAMPLE and one other sample on the stack; their document ids by file name."""
    pdf = (SAMPLES / f"{SAMPLE.filename}.pdf").read_bytes()
    other = (SAMPLES / f"{pdfs.SAMPLES[0].filename}.pdf").read_bytes()
    upload = await stack.client.post("/documents", files=[
        ("files", (f"{SAMPLE.filename}.pdf", pdf, "application/pdf")),
        ("files", (f"{pdfs.SAMPLES[0].filename}.pdf", other, "application/pdf"))])
    await wait_status(stack.client, upload.json()["id"], {"completed"}, timeout=60)
    return {d["filename"]: d["document_id"] for d in upload.json()["documents"]}
