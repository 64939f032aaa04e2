"""Chat completions from any OpenAI-compatible endpoint: streamed, with tool calls, retried.

    chat = ChatClient(http, "https://api.openai.com/v1", key, "gpt-4o-mini")
    reply = await chat.complete(messages, tools=TOOLS, on_delta=send, on_restart=clear)
    reply.content, reply.tool_calls, reply.usage

Transient failures (timeouts, 429 with Retry-After, 5xx, a stream cut before `[DONE]`) are
retried from the start of the answer, so a caller that relays deltas is told to start over
(`on_restart`) before the deltas of the new attempt arrive. A `throttle` (a rate limit shared
with other workers) is waited on before every attempt.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from httpx_sse import SSEError, aconnect_sse

from longtask.core.errors import TransientError
from longtask.pipeline.http import MAX_RETRY_AFTER, check, transport_error, with_retries

OnDelta = Callable[[str], Awaitable[None]]
OnRestart = Callable[[], Awaitable[None]]


class Throttle(Protocol):
    """Waits until a request of about `tokens` tokens may go to the provider; `pause` holds
    every caller back for as long as the provider asked (Retry-After)."""

    async def wait(self, tokens: int) -> None: ...

    async def pause(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON, as the model wrote it

    def parsed(self) -> dict[str, Any]:
        """The arguments as an object; {} when the model wrote something else."""
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ChatReply:
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)

    def as_message(self) -> dict[str, Any]:
        """The assistant message to send back in the next round of the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [call.as_dict() for call in self.tool_calls]
        return message


class ChatClient:
    """Streams `{base_url}/chat/completions`."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str | None, model: str,
                 timeout: float = 60.0, throttle: Throttle | None = None) -> None:
        self._http = http
        self._url = f"{base_url}/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self._timeout = timeout
        self._throttle = throttle

    async def complete(self, messages: list[dict[str, Any]], *,
                       tools: list[dict[str, Any]] | None = None, temperature: float = 0.2,
                       on_delta: OnDelta | None = None,
                       on_restart: OnRestart | None = None) -> ChatReply:
        body: dict[str, Any] = {"model": self.model, "stream": True, "temperature": temperature,
                                "messages": messages, "stream_options": {"include_usage": True}}
        if tools:
            body["tools"] = tools
        estimate = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 256
        attempts = 0

        async def attempt() -> ChatReply:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and on_restart is not None:
                await on_restart()
            if self._throttle is None:
                return await self._stream(body, on_delta)
            await self._throttle.wait(estimate)
            try:
                return await self._stream(body, on_delta)
            except TransientError as exc:
                if exc.retry_after is not None:  # the provider said how long: all of us wait
                    await self._throttle.pause(min(exc.retry_after, MAX_RETRY_AFTER))
                raise

        return await with_retries(attempt, service="llm")

    async def _stream(self, body: dict[str, Any], on_delta: OnDelta | None) -> ChatReply:
        reply = _Assembly()
        try:
            async with aconnect_sse(self._http, "POST", self._url, json=body, headers=self._headers,
                                    timeout=self._timeout) as source:
                if source.response.status_code >= 400:
                    await source.response.aread()
                check(source.response, "llm")
                async for event in source.aiter_sse():
                    if event.data.strip() == "[DONE]":
                        return reply.done()
                    delta = reply.add(event.data)
                    if delta and on_delta is not None:
                        await on_delta(delta)
        except httpx.HTTPError as exc:
            raise transport_error(exc, "llm") from exc
        except SSEError as exc:
            raise TransientError(f"llm answered without an event stream: {exc}",
                                 code="llm_unavailable") from exc
        raise TransientError("the llm stream ended before [DONE]", code="llm_unavailable")


class _Assembly:
    """Puts a streamed answer back together: content, tool calls by index, usage."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, int] = {}

    def add(self, data: str) -> str:
        """Take one chunk; return its new content, if any."""
        try:
            chunk = json.loads(data)
        except ValueError:
            return ""
        if not isinstance(chunk, dict):
            return ""
        if isinstance(chunk.get("usage"), dict):
            self.usage = {k: int(v) for k, v in chunk["usage"].items() if isinstance(v, int)}
        choices = chunk.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        delta = choice.get("delta") or {}
        for call in delta.get("tool_calls") or []:
            slot = self.calls.setdefault(int(call.get("index", 0)),
                                         {"id": "", "name": "", "arguments": ""})
            function = call.get("function") or {}
            slot["id"] = call.get("id") or slot["id"]
            slot["name"] += function.get("name") or ""
            slot["arguments"] += function.get("arguments") or ""
        content = str(delta.get("content") or "")
        if content:
            self.pieces.append(content)
        return content

    def done(self) -> ChatReply:
        calls = tuple(ToolCall(c["id"] or f"call_{i}", c["name"], c["arguments"])
                      for i, c in sorted(self.calls.items()))
        return ChatReply("".join(self.pieces), calls, self.finish_reason, self.usage)
