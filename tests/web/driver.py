"""Runs one of the dashboard's Node scenarios (tests/web/*.mjs) in Debian's chromium and talks
to it: JSON lines from its stdout, "go" lines to its stdin."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, Web

HERE = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"


def browser_or_skip() -> None:
    """Skip only when chromium itself is absent and CI is not "true"; a missing driver fails."""
    if not CHROMIUM.exists():
        reason = f"no {CHROMIUM}: `make browser-deps` installs Debian's chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    if shutil.which("node") is None:
        pytest.fail("no `node`: `make browser-deps` installs it")
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        pytest.fail("no tests/web/node_modules/playwright-core: run `make browser-deps`")


class Scenario:
    def __init__(self, script: str, web: Web, key: str, **extra: str) -> None:
        self.script = script
        self.web = web
        self.env = {**os.environ, "DASHBOARD_URL": web.url, "DASHBOARD_KEY": key,
                    "CHROMIUM": str(CHROMIUM), **extra}
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Scenario:
        browser_or_skip()
        ARTIFACTS.mkdir(exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            "node", str(HERE / self.script), cwd=HERE, env=self.env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def message(self, timeout: float = 60.0) -> dict[str, Any]:
        """The script's next message; its stderr and the web log if it ended instead."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.script} said nothing for {timeout}s") from None
        if not line:
            await self.proc.wait()
            err = await self.proc.stderr.read() if self.proc.stderr else b""
            raise AssertionError(f"{self.script} exited {self.proc.returncode}:\n"
                                 f"{err.decode(errors='replace')}\n--- web log:\n{self.web.tail()}")
        return dict(json.loads(line))

    async def go(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()

    async def seen(self, timeout: float = 240.0) -> dict[str, Any]:
        """What the page showed: the script's last message."""
        message = await self.message(timeout)
        assert message.get("done"), message
        return dict(message["seen"])
