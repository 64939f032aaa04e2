"""Task kind `agent`: answer a question over the tenant's documents, in steps.

    POST /tasks {"kind": "agent", "params": {"question": "...", "document_ids": [...],
                                             "max_steps": 10, "step_timeout": 120}}

Each step is one LLM call (tool calling, streamed live as `delta` events) and the tools it asks
for; every step is a `step` event (number, tool, arguments, a short result, tokens). Durable:
the conversation is checkpointed after each LLM answer and each tool result, so a re-run after a
crash or a retry resumes there and never pays for a finished LLM call twice. The answer cites
`[file, p. N]`; the result lists the citations that match passages the tools returned. With no
LLM configured it answers with the best passages and says so (`"method": "retrieval_only"`).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from longtask.core.context import JobContext
from longtask.core.errors import TransientError
from longtask.core.kinds import kind
from longtask.kinds import agent_tools as tools
from longtask.kinds import llm
from longtask.pipeline.chat import ChatClient, ChatReply, ToolCall

MAX_STEPS = 20
MAX_DOCUMENTS = 50  # an agent run limited to some documents: at most this many
QUESTION_CHARS = 4000
_SYSTEM = ("You answer questions about the user's documents. Use the tools to find and read "
           "passages; do not answer from memory. When you know the answer, reply without tool "
           "calls, citing each fact as [file name, p. N] with the page it is on.")
_CITATION = re.compile(r"\[([^\[\],]+?),\s*p+\.?\s*(\d+)(?:\s*[-–]\s*\d+)?\]")


PARAMS: dict[str, Any] = {
    "type": "object", "title": "agent", "required": ["question"], "additionalProperties": False,
    "description": "Answers a question over the tenant's documents in steps of tool calls, "
                   "citing [file, p. N]; without an LLM, the best passages (retrieval only).",
    "properties": {
        "question": {"type": "string", "minLength": 1, "maxLength": QUESTION_CHARS,
                     "pattern": r"\S", "description": "what to answer"},
        "document_ids": {"type": "array", "maxItems": MAX_DOCUMENTS,  # each search looks in each
                         "items": {"type": "string", "format": "uuid"},
                         "description": "look only in these documents (default: all of them)"},
        "max_steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS, "default": 10,
                      "description": "LLM calls at most"},
        "step_timeout": {"type": "number", "minimum": 1, "maximum": 600, "default": 120,
                         "description": "seconds one LLM call may take"}},
    "examples": [{"question": "When is the levain ready?", "max_steps": 5}]}


@kind("agent", params_schema=PARAMS)
async def agent(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    question, only, max_steps, step_timeout = _read(params)
    chat = llm.chat(ctx)
    if chat is None:
        return await _retrieval_only(ctx, question, only)
    messages: list[dict[str, Any]] = ctx.checkpoint.get("messages") or [
        {"role": "system", "content": _SYSTEM}, {"role": "user", "content": question}]
    sources: list[dict[str, Any]] = ctx.checkpoint.get("sources", [])
    tokens: int = ctx.checkpoint.get("tokens", 0)
    while True:
        step = sum(1 for m in messages if m["role"] == "assistant")
        pending = _unanswered(messages)
        if not pending:  # the model's turn
            if step >= max_steps:
                return _result("max_steps", None, sources, step, tokens,
                               f"stopped after {max_steps} steps without an answer")
            reply = await _call(ctx, chat, messages, step + 1, step_timeout)
            used = reply.usage.get("total_tokens", 0)
            tokens += used
            messages.append(reply.as_message())
            await ctx.save_checkpoint(messages=messages, tokens=tokens, step_tokens=used)
            if not reply.tool_calls:
                await ctx.emit("step", step=step + 1, tool=None, answer=reply.content,
                               tokens=used)
                return _result("answered", reply.content, sources, step + 1, tokens)
            continue
        for call in pending:  # the tools' turn (also after a crash between two of them)
            ctx.raise_if_canceled()
            seen = await tools.run(ctx, call.name, call.parsed(), only)
            sources += [s for s in seen.sources if s not in sources]
            messages.append({"role": "tool", "tool_call_id": call.id, "content": seen.content})
            await ctx.save_checkpoint(messages=messages, sources=sources)
            await ctx.emit("step", step=step, tool=call.name, arguments=call.parsed(),
                           summary=seen.summary, tokens=ctx.checkpoint.get("step_tokens", 0))
        await ctx.progress(min(95, 100 * step / max_steps), f"step {step}", stage="agent",
                           step=step)


async def _call(ctx: JobContext, chat: ChatClient, messages: list[dict[str, Any]], step: int,
                timeout: float) -> ChatReply:
    stream = ctx.text_stream(step)
    try:
        async with asyncio.timeout(timeout):
            reply = await chat.complete(messages, tools=tools.SPECS, on_delta=stream.write,
                                        on_restart=stream.restart)
    except TimeoutError:
        raise TransientError(f"step {step} took longer than {timeout:g}s",
                             code="timeout") from None
    await stream.close()
    return reply


def _unanswered(messages: list[dict[str, Any]]) -> list[ToolCall]:
    """The tool calls of the last assistant message that have no result yet."""
    answered = {m.get("tool_call_id") for m in messages if m["role"] == "tool"}
    last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
    calls = (last or {}).get("tool_calls") or []
    return [ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
            for c in calls if c["id"] not in answered]


async def _retrieval_only(ctx: JobContext, question: str, only: list[str] | None) -> dict[str, Any]:
    found = await tools.search(ctx, question, 3, only)
    await ctx.emit("step", step=1, tool="search", arguments={"query": question},
                   summary=found.summary)
    answer = "\n\n".join(f"{s['text'][:400]} [{s['filename']}, p. {s['page_start']}]"
                         for s in found.sources) or "No passage in your documents matches."
    result = _result("answered", answer, found.sources, 1, 0)
    return {**result, "method": "retrieval_only"}


def _result(outcome: str, answer: str | None, sources: list[dict[str, Any]], steps: int,
            tokens: int, message: str | None = None) -> dict[str, Any]:
    return {"outcome": outcome, "answer": answer, "method": "llm", "steps": steps,
            "tokens": tokens, "citations": citations(answer or "", sources),
            **({"message": message} if message else {})}


def citations(answer: str, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `[file, p. N]` marks of an answer that point at a passage the tools returned."""
    found = []
    for name, page in _CITATION.findall(answer):
        for source in sources:
            if source["filename"] == name.strip() and \
                    source["page_start"] <= int(page) <= source["page_end"]:
                cited = {"document_id": source["document_id"], "filename": source["filename"],
                         "page": int(page)}
                if cited not in found:
                    found.append(cited)
                break
    return found


def _read(params: dict[str, Any]) -> tuple[str, list[str] | None, int, float]:
    """The params as the run uses them; PARAMS checked them at submit."""
    only = params.get("document_ids")
    if only is not None:
        only = [str(uuid.UUID(d)) for d in only]  # one spelling, as the store has them
    # JSON Schema's integer takes 5.0 as well: count in ints
    return (params["question"].strip(), only, int(params.get("max_steps", 10)),
            float(params.get("step_timeout", 120)))


