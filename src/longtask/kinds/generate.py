"""Task kind `generate`: a batch of prompts, one item (and one LLM call) each.

    POST /tasks {"kind": "generate", "params": {"prompts": ["...", "..."], "system": "..."}}
    POST /tasks {"kind": "generate", "params": {"summarise": ["DOCUMENT_ID", ...]}}

Each output streams live (`delta` events) and is the item's result. The call is checkpointed
once answered, so a re-run never pays for it twice; the shared provider limit
(LONGTASK_LLM_RATE / _TOKEN_RATE) keeps many workers under the provider's rate.
"""

from __future__ import annotations

import uuid
from typing import Any

from longtask.core.context import JobContext
from longtask.core.errors import PermanentError
from longtask.core.kinds import kind
from longtask.kinds import llm
from longtask.store import documents

MAX_ITEMS = 1000
PROMPT_CHARS = 20_000
_SUMMARISE = "Summarise this document in 3 to 5 plain sentences:\n\n"


PARAMS: dict[str, Any] = {
    "type": "object", "title": "generate", "additionalProperties": False,
    "description": "A batch of prompts, or of documents to summarise: one item, and one LLM "
                   "call, each. Needs an LLM (LONGTASK_LLM_URL).",
    "properties": {
        "prompts": {"type": "array", "minItems": 1, "maxItems": MAX_ITEMS,
                    "items": {"type": "string", "minLength": 1, "maxLength": PROMPT_CHARS,
                              "pattern": r"\S"},
                    "description": "one item per prompt"},
        "system": {"type": "string", "maxLength": PROMPT_CHARS,
                   "description": "the system message of each prompt"},
        "summarise": {"type": "array", "minItems": 1, "maxItems": MAX_ITEMS,
                      "items": {"type": "string", "format": "uuid"},
                      "description": "or: documents' ids, one summary each"}},
    "oneOf": [{"title": "prompts", "required": ["prompts"]},
              {"title": "summarise", "required": ["summarise"]}],
    "examples": [{"prompts": ["A haiku about bread", "A limerick about yeast"],
                  "system": "You are a poet."}]}


def _items(params: dict[str, Any]) -> list[dict[str, Any]]:
    """One item per prompt or per document; PARAMS checked them at submit."""
    if "prompts" in params:
        return [{"prompt": p, "system": params.get("system")} for p in params["prompts"]]
    return [{"document_id": str(uuid.UUID(d))} for d in params["summarise"]]


@kind("generate", items=_items, params_schema=PARAMS,
      item_name=lambda item: (item.get("prompt") or item.get("document_id") or "")[:80])
async def generate(ctx: JobContext, item: dict[str, Any]) -> dict[str, Any]:
    if "output" in ctx.checkpoint:  # answered before a crash or retry: not asked again
        return {"output": ctx.checkpoint["output"], "tokens": ctx.checkpoint.get("tokens", 0)}
    chat = llm.chat(ctx)
    if chat is None:
        raise PermanentError("no LLM is configured (LONGTASK_LLM_URL)", code="llm_unavailable")
    messages = [{"role": "system", "content": item["system"]}] if item.get("system") else []
    messages.append({"role": "user", "content": await _prompt(ctx, item)})
    await ctx.progress(10, "asking the model", stage="generate")
    stream = ctx.text_stream()
    reply = await chat.complete(messages, on_delta=stream.write, on_restart=stream.restart)
    await stream.close()
    tokens = reply.usage.get("total_tokens", 0)
    await ctx.save_checkpoint(output=reply.content, tokens=tokens)
    return {"output": reply.content, "tokens": tokens}


async def _prompt(ctx: JobContext, item: dict[str, Any]) -> str:
    if "prompt" in item:
        return str(item["prompt"])
    doc = await documents.get(ctx.pool, ctx.tenant, item["document_id"])
    return _SUMMARISE + "\n\n".join(await documents.pages(ctx.pool, ctx.tenant, doc.id))[
        :PROMPT_CHARS]
