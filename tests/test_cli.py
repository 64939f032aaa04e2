"""The `longtask` command: keys made by it work against a real server, and the client commands
(submit, watch, ls, show, cancel, search) answer a user as they should, with the right exit codes."""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Services, Tenant
from tests.support import ROOT, Web, Worker, task_status, wait_for


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


# The client commands, run as a user runs them, against the session's web and worker.

def _env(services: Services, web: Web, tenant: Tenant, **extra: str) -> dict[str, str]:
    return {**services.env, "LONGTASK_URL": web.url, "LONGTASK_API_KEY": tenant.key, **extra}


async def _cli(env: dict[str, str], *args: str,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "longtask.cli", *args], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


async def test_submit_follow_then_ls_show_and_search(services: Services, web: Web,
                                                    tenant_a: Tenant,
                                                    live_worker: Worker) -> None:
    env = _env(services, web, tenant_a)
    samples = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "samples").glob("*.pdf"))
    run = await _cli(env, "submit", *samples, "--follow", "--metadata", '{"team": "cli"}')
    assert run.returncode == 0, run.stdout + run.stderr
    task_id = run.stdout.split()[1].rstrip(":")
    for name in ("bicycle-history.pdf", "rust-ownership.pdf", "sourdough.pdf", "water-cycle.pdf"):
        assert f"✓ {name} completed" in run.stdout  # printed as each file finished
    assert "100%" in run.stdout
    assert f"task {task_id} completed: 4 of 4 items completed, 0 failed" in run.stdout

    listed = await _cli(env, "ls")
    assert listed.returncode == 0 and task_id in listed.stdout
    assert "ingest" in listed.stdout and "completed" in listed.stdout and "4/4" in listed.stdout
    shown = await _cli(env, "show", task_id)
    assert shown.returncode == 0 and task_id in shown.stdout
    assert all(Path(s).name in shown.stdout for s in samples)
    found = await _cli(env, "search", "how long should the levain rise before mixing", "-k", "2")
    assert found.returncode == 0, found.stderr
    rows = [line for line in found.stdout.splitlines() if ".pdf" in line]
    assert len(rows) == 2 and "sourdough.pdf" in rows[0], found.stdout  # the best hit first


async def test_a_batch_in_which_every_file_fails_exits_1(services: Services, web: Web,
                                                        tenant_a: Tenant, live_worker: Worker,
                                                        tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a PDF at all")
    run = await _cli(_env(services, web, tenant_a), "submit", str(notes), "--follow")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "✗ notes.txt: unsupported_type" in run.stdout  # printed when it happened
    task_id = run.stdout.split()[1].rstrip(":")
    assert run.stdout.splitlines()[-1] == f"task {task_id} failed"

    retried = await _cli(_env(services, web, tenant_a), "retry", task_id)
    assert retried.returncode == 0 and f"retries 1 failed items of {task_id}" in retried.stdout


async def test_usage_and_configuration_errors_exit_2_without_a_traceback(
        services: Services, web: Web, tenant_a: Tenant, tmp_path: Path) -> None:
    env = _env(services, web, tenant_a)
    cases = [
        (env, ["submit"], "required: FILE"),
        (env, ["ls", "--status", "sleeping"], "invalid choice"),
        (env, ["submit", str(tmp_path / "missing.pdf")], "no such file"),
        (env, ["submit", "x.pdf", "--metadata", "[1]"], "must be a JSON object"),
        ({**env, "LONGTASK_API_KEY": ""}, ["ls"], "no API key"),
        (env, ["ls", "--key", "lt_wrong"], "401 invalid_key: this API key is unknown"),
        (env, ["ls", "--url", "localhost:8000"], "must start with http"),
    ]
    for case_env, args, message in cases:
        run = await _cli(case_env, *args)
        assert (run.returncode, message in run.stderr) == (2, True), (args, run.stderr)
        assert "Traceback" not in run.stderr
    missing = await _cli(env, "show", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "404 not_found" in missing.stderr
    assert "Traceback" not in missing.stderr


async def _watch_then_ctrl_c(env: dict[str, str], tenant: Tenant, task_id: str,
                             stdin: Any) -> tuple[int, str]:
    """Run `longtask watch`, wait until its stream is open, send SIGINT; exit code and output."""
    proc = subprocess.Popen([sys.executable, "-m", "longtask.cli", "watch", task_id], env=env,
                            cwd=ROOT, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        async def watching() -> bool:
            return bool((await tenant.client.get("/stats")).json()["open_streams"] >= 1)

        await wait_for(watching, 30, "the watch to open its event stream")
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out


async def test_ctrl_c_off_a_terminal_leaves_the_task_running(
        services: Services, web: Web, tenant_a: Tenant, live_worker: Worker) -> None:
    env = _env(services, web, tenant_a)
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.forever"})).json()["id"]
    code, out = await _watch_then_ctrl_c(env, tenant_a, task_id, subprocess.DEVNULL)
    assert code == 130, out
    assert f"task {task_id} keeps running" in out and "Traceback" not in out
    assert (await task_status(tenant_a.client, task_id))["status"] == "running"

    canceled = await _cli(env, "cancel", task_id)
    assert canceled.returncode == 0 and f"task {task_id} canceled" in canceled.stdout
    shown = await _cli(env, "show", task_id)
    assert "canceled" in shown.stdout and "test.forever" in shown.stdout


async def test_ctrl_c_on_a_terminal_asks_and_cancels(
        services: Services, web: Web, tenant_a: Tenant, live_worker: Worker) -> None:
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.forever"})).json()["id"]
    master, slave = pty.openpty()
    try:
        os.write(master, b"y\n")  # the answer waits in the terminal until the question is asked
        code, out = await _watch_then_ctrl_c(_env(services, web, tenant_a), tenant_a, task_id,
                                             slave)
    finally:
        os.close(master)
        os.close(slave)
    assert code == 130, out
    assert f"cancel task {task_id}? [y/N]" in out and f"task {task_id} canceled" in out
    assert (await task_status(tenant_a.client, task_id))["status"] == "canceled"
