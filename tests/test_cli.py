"""The `longtask` command: keys made by it work against a real server."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx

from tests.conftest import Services
from tests.support import ROOT, Web


async def test_keys_create_makes_a_working_key(services: Services, web: Web) -> None:
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "longtask.cli", "keys", "create", "--tenant", "cli"],
        env=services.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    key = run.stdout.strip()
    assert key.startswith("lt_")
    async with httpx.AsyncClient(base_url=web.url) as client:
        ok = await client.get("/tasks", headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200 and ok.json()["tasks"] == []


async def test_a_bad_setting_stops_the_command_with_its_name(services: Services) -> None:
    env = {**services.env, "LONGTASK_WORKER_CONCURRENCY": "lots"}
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "longtask.cli", "migrate"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "LONGTASK_WORKER_CONCURRENCY" in run.stderr
