"""SIGTERM to a web process with open event streams: the streams end (they do not hang the
shutdown), they had told the browser to come back quickly, and the process shuts down cleanly."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import httpx

from tests.support import wait_status


async def test_sigterm_ends_open_streams_with_a_retry_hint(make_stack: Any) -> None:
    stack = await make_stack(LONGTASK_SHUTDOWN_GRACE="1")
    task_id = (await stack.client.post("/tasks", json={"kind": "test.forever"})).json()["id"]
    await wait_status(stack.client, task_id, {"running"})
    lines: list[str] = []
    async with stack.client.stream("GET", f"/tasks/{task_id}/events") as response:
        stream = response.aiter_lines()
        while not lines or not lines[-1].startswith("data:"):
            lines.append(await anext(stream))  # until the stream is live
        exit_code = asyncio.create_task(asyncio.to_thread(stack.web.terminate))
        async with asyncio.timeout(15):  # the stream ends, it does not hang the shutdown
            try:
                async for line in stream:
                    lines.append(line)
            except httpx.RemoteProtocolError:
                pass  # closed mid-body: to a browser, a dropped stream to come back to
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly, so the exit status
    # is "terminated by SIGTERM" after a complete shutdown, never a kill after a hang
    assert await exit_code in (0, -signal.SIGTERM)
    assert "Application shutdown complete." in stack.web.tail(10)
    assert "retry: 1000" in lines  # a browser's EventSource comes back after 1 s
