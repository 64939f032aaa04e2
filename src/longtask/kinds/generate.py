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


def _items(params: Any) -> list[dict[str, Any]]:
    system = params.get("system") if isinstance(params.get("system"), str) else None
    if isinstance(params.get("prompts"), list):
        prompts = params["prompts"]
        if not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError("`prompts` must be non-empty strings")
        items = [{"prompt": p[:PROMPT_CHARS], "system": system} for p in prompts]
    elif isinstance(params.get("summarise"), list):
        items = [{"document_id": str(uuid.UUID(str(d)))} for d in params["summarise"]]
    else:
        raise KeyError("give `prompts` (a list of strings) or `summarise` (document ids)")
    if len(items) > MAX_ITEMS:
        raise ValueError(f"at most {MAX_ITEMS} items")
    return items


@kind("generate", items=_items,
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
