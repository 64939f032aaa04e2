"""The `longtask` command: keys made by it work against a real server, and the client commands
(submit, watch, ls, show, cancel, search) answer a user as they should, with the right exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from longtask.client import args as client_args
from longtask.kinds import agent
from longtask.testing import pdfs
from longtask.testing.fake_openai import CHAT, FakeOpenAI
from tests.agents import ANSWER, SAMPLE, indexed_sample, script, step_of
from tests.conftest import Services, Tenant
from tests.support import (
    ROOT,
    SAMPLES,
    CuttableProxy,
    Web,
    Worker,
    fake_providers,
    task_status,
    wait_for,
    wait_status,
)


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


async def test_keys_list_and_revoke_by_exact_id(services: Services, web: Web) -> None:
    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "longtask.cli", "keys", *args],
            env=services.env, cwd=ROOT, capture_output=True, text=True, timeout=60)

    tenant = f"keys-{uuid.uuid4().hex[:6]}"
    made = [(await cli("create", "--tenant", tenant, "--name", n)).stdout.strip()
            for n in ("ci", "laptop")]
    other = (await cli("create", "--tenant", f"{tenant}-other")).stdout.strip()
    listed = await cli("list", "--tenant", tenant)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[-1] for line in lines] == ["ci", "laptop"]  # its own keys only
    assert all(" live " in line for line in lines)
    assert all(key not in listed.stdout for key in made)  # never the key, only its prefix
    assert made[0][:10] in lines[0]
    laptop_id = lines[1].split()[0]

    async with httpx.AsyncClient(base_url=web.url) as client:
        async def status(key: str) -> int:
            answer = await client.get("/tasks", headers={"Authorization": f"Bearer {key}"})
            return answer.status_code

        assert [await status(k) for k in (*made, other)] == [200, 200, 200]  # now cached
        revoked = await cli("revoke", laptop_id)
        assert revoked.returncode == 0, revoked.stderr
        assert laptop_id in revoked.stdout and "revoked" in revoked.stdout

        async def refused() -> bool:
            return await status(made[1]) == 401

        await wait_for(refused, timeout=15, interval=0.5,  # the web's key cache keeps 10 s
                       what="the revoked key to be refused")
        assert await status(made[0]) == 200 and await status(other) == 200
    relisted = (await cli("list", "--tenant", tenant)).stdout.splitlines()
    assert " revoked " in relisted[1] and " live " in relisted[0]
    for wrong in (made[0][:10], str(uuid.uuid4())):  # a prefix is no id; an id of no key
        refused_revoke = await cli("revoke", wrong)
        assert refused_revoke.returncode == 2
        assert refused_revoke.stderr.count("\n") == 1, refused_revoke.stderr


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
    samples = sorted(str(p.relative_to(ROOT)) for p in SAMPLES.glob("*.pdf"))
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
        (env, ["ask"], "required: QUESTION"),
        (env, ["ask", "  "], "argument QUESTION: the question is empty"),
        (env, ["ask", "why?", "--max-steps", "0"], "--max-steps: must be a number from 1 to 20"),
        (env, ["ask", "why?", "--max-steps", "many"], "must be a number from 1 to 20"),
        (env, ["ask", "why?", "--documents", "sourdough.pdf"], "not a document id"),
        (env, ["ask", "why?", "--documents", ","], "name at least one document id"),
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
    """Ctrl-C ends `watch` within 2 s whenever it comes, and the task keeps running."""
    env = _env(services, web, tenant_a)
    task_id = (await tenant_a.client.post("/tasks", json={"kind": "test.forever"})).json()["id"]
    await wait_status(tenant_a.client, task_id, {"running"})
    left, closed = f"task {task_id} keeps running", _streams(tenant_a, open_=False)

    async with _Live(env, "watch", task_id) as cli:  # as it starts, maybe before `main` runs:
        code, out = await cli.interrupt()  # 1 if Python was importing `site`, -2 if ours
    assert code in (130, 1, -signal.SIGINT), out

    async with _Live(env, "watch", task_id) as cli:  # as it connects
        await cli.shows("following; Ctrl-C stops")
        code, out = await cli.interrupt()
    assert code == 130 and left in out and "Traceback" not in out, out

    # with its stream open, even started with SIGINT ignored (as a script's background job is)
    await wait_for(closed, 10, "the server to close the last watch's stream")
    async with _Live(env, "watch", task_id, sigint_ignored=True) as cli:
        await wait_for(_streams(tenant_a), 30, "the watch to open its event stream")
        code, out = await cli.interrupt()
    assert code == 130 and left in out and "Traceback" not in out, out

    await wait_for(closed, 10, "the server to close the last watch's stream")
    async with CuttableProxy(web.port) as proxy:  # while it reconnects after a drop
        async with _Live({**env, "LONGTASK_URL": proxy.url}, "watch", task_id) as cli:
            await wait_for(_streams(tenant_a), 30, "the watch to open its event stream")
            proxy.refusing, before = True, proxy.connections
            proxy.cut()

            async def reconnecting() -> bool:
                return proxy.connections > before

            await wait_for(reconnecting, 30, "the watch to reconnect")
            code, out = await cli.interrupt()
    assert code == 130 and left in out and "Traceback" not in out, out
    assert (await task_status(tenant_a.client, task_id))["status"] == "running"

    canceled = await _cli(env, "cancel", task_id)
    assert canceled.returncode == 0 and f"task {task_id} canceled" in canceled.stdout
    shown = await _cli(env, "show", task_id)
    assert "canceled" in shown.stdout and "test.forever" in shown.stdout


def _streams(tenant: Tenant, open_: bool = True) -> Callable[[], Awaitable[bool]]:
    """A check for `wait_for`: whether the web has an event stream open (or has none)."""
    async def check() -> bool:
        return bool((await tenant.client.get("/stats")).json()["open_streams"]) == open_

    return check


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


# `longtask ask`: an agent run over two indexed samples, the test server playing the model.

class _Live:
    """A `longtask` command whose output is read as it comes, each piece with when it came."""

    def __init__(self, env: dict[str, str], *args: str, sigint_ignored: bool = False) -> None:
        self.env = env
        self.pieces: list[tuple[float, bytes]] = []
        self.command = [sys.executable, "-m", "longtask.cli", *args]
        if sigint_ignored:  # as a shell starts a background job without job control
            self.command = ["sh", "-c", "trap '' INT; exec \"$@\"", "sh", *self.command]

    async def __aenter__(self) -> _Live:
        self.proc = await asyncio.create_subprocess_exec(
            *self.command, env=self.env, cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while piece := await self.proc.stdout.read(65536):
            self.pieces.append((time.monotonic(), piece))

    async def ended(self, timeout: float = 120) -> tuple[int, str]:
        """The exit code and the whole output."""
        async with asyncio.timeout(timeout):
            await self._reader
            code = await self.proc.wait()
        return code, b"".join(p for _, p in self.pieces).decode()

    async def shows(self, text: str, timeout: float = 30) -> None:
        async def shown() -> bool:
            return text.encode() in b"".join(p for _, p in self.pieces)

        await wait_for(shown, timeout, f"{text!r} in the output")

    async def interrupt(self, within: float = 2.0) -> tuple[int, str]:
        """Ctrl-C: the exit code and the whole output, once it has exited (within `within` s)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return await self.ended(within)
        except TimeoutError:
            out = b"".join(p for _, p in self.pieces).decode(errors="replace")
            raise AssertionError(f"still running {within} s after SIGINT: {out!r}") from None

    def when(self, text: str) -> float:
        """When the output first held `text`."""
        out = b""
        for at, piece in self.pieces:
            out += piece
            if text.encode() in out:
                return at
        raise AssertionError(f"{text!r} never came")


def _stack_env(stack: Any, url: str | None = None) -> dict[str, str]:
    return {**stack.env, "LONGTASK_URL": url or stack.web.url, "LONGTASK_API_KEY": stack.key}


def _after_answer(out: str, task: dict[str, Any]) -> list[str]:
    """The lines after the stored answer, which must be printed once, on lines of its own,
    after every step."""
    answer = task["result"]["answer"]
    assert out.count(answer) == 1, out
    before, after = out.split(answer)
    assert before.endswith("\n") and after.startswith("\n"), out
    assert not any(line.startswith("step ") for line in after.splitlines()), out
    return after.splitlines()[1:]


def _citations(task: dict[str, Any]) -> list[str]:
    return ["citations:", *(f"  [{c['filename']}, p. {c['page']}]"
                            for c in task["result"]["citations"])]


async def test_ask_follow_prints_the_steps_then_streams_the_answer_and_cites(
        make_stack: Any) -> None:
    with FakeOpenAI(token_delay=0.1) as fake:
        stack = await make_stack(**fake_providers(fake))
        await indexed_sample(stack)
        fake.reply = script
        async with _Live(_stack_env(stack), "ask", "When is the levain ready?", "--follow") as cli:
            code, out = await cli.ended()
        task_id = out.split()[1]
        task = await task_status(stack.client, task_id)
        last_call = [r for r in fake.requests if r.path == CHAT and step_of(r.body) == 4][-1]
        watched = await _cli(_stack_env(stack), "watch", task_id)
    assert code == 0 and task["status"] == "completed", out
    lines = out.splitlines()
    assert lines[0] == f"task {task_id} (agent): following; Ctrl-C stops"
    steps = [line.split("(")[0] for line in lines if line.startswith("step ")]
    assert steps == ["step 1 · search", "step 2 · read_pages", "step 3 · read_summary"], out
    assert lines[1].startswith(f"step 1 · search({json.dumps(SAMPLE.phrase)}) → ")
    assert lines[1].endswith(f"passages for {SAMPLE.phrase!r}")
    assert lines.index("Reading the passage.") == 2  # what the model wrote with its 2nd call
    assert task["result"]["answer"].startswith(ANSWER) and task["result"]["citations"]
    assert _after_answer(out, task) == [
        *_citations(task), f"task {task_id} completed: 4 steps, {task['result']['tokens']} tokens"]
    # the answer's first words were on the screen while the model was still writing it
    assert cli.when(f"\n{ANSWER[:24]}") < last_call.ended
    # the ended run, watched: the same from the stored events, but for the live-only text
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert watched.stdout.splitlines()[1:] == [
        line for line in lines[1:] if line != "Reading the passage."], watched.stdout


async def test_ask_follow_shows_the_answer_once_through_a_retried_call_and_a_dropped_stream(
        make_stack: Any) -> None:
    with FakeOpenAI(token_delay=0.1) as fake:
        stack = await make_stack(**fake_providers(fake))
        await indexed_sample(stack)
        drafts = iter(["A first draft that the dropped call never finishes"])

        def redrafting(messages: list[dict[str, Any]]) -> str | dict[str, Any]:
            reply = script(messages)
            return next(drafts, reply) if isinstance(reply, str) else reply

        fake.reply = redrafting
        fake.fail_next("broken_stream", after=4)  # steps 1-3 and the search's embedding pass
        async with CuttableProxy(stack.web.port) as proxy:
            env = _stack_env(stack, proxy.url)
            async with _Live(env, "ask", "When is the levain ready?", "--follow") as cli:
                async def rewriting() -> bool:  # the last step's second call is streaming
                    calls = [r for r in fake.requests if r.path == CHAT and step_of(r.body) == 4]
                    return len(calls) == 2 and not calls[1].ended

                await wait_for(rewriting, 60, "the last step's retried call to write")
                connections = proxy.connections
                proxy.cut()
                code, out = await cli.ended()
            task_id = out.split()[1]
            task = await task_status(stack.client, task_id)
    assert code == 0 and task["status"] == "completed", out
    assert [step_of(r.body) for r in fake.requests if r.fault == "broken_stream"] == [4]
    assert proxy.connections > connections  # it reconnected
    assert out.count("A first draft") <= 1 and task["result"]["answer"].startswith(ANSWER)
    assert _after_answer(out, task) == [
        *_citations(task), f"task {task_id} completed: 4 steps, {task['result']['tokens']} tokens"]


async def test_ask_without_an_llm_answers_with_passages_and_says_so(make_stack: Any) -> None:
    with FakeOpenAI() as fake:  # embeddings only
        stack = await make_stack(**fake_providers(fake, LONGTASK_LLM_URL=""))
        ids = await indexed_sample(stack)
        other = f"{pdfs.SAMPLES[0].filename}.pdf"
        env = _stack_env(stack)
        run = await _cli(env, "ask", SAMPLE.phrase, "--follow", "--documents", ids[other])
        submitted = await _cli(env, "ask", "Which documents are there?", "--max-steps", "3")
        assert fake.calls(CHAT) == 0
    assert run.returncode == 0, run.stdout + run.stderr
    task_id = run.stdout.split()[1]
    task = await task_status(stack.client, task_id)
    assert task["result"]["method"] == "retrieval_only"
    lines = run.stdout.splitlines()
    assert lines[1].startswith(f"step 1 · search({json.dumps(SAMPLE.phrase)}) → ")
    assert lines[2] == "retrieval only (no LLM is configured): the passages that match best"
    assert _after_answer(run.stdout, task) == [
        *_citations(task), f"task {task_id} completed: 1 step, 0 tokens"]
    assert {c["filename"] for c in task["result"]["citations"]} == {other}  # only that document

    assert submitted.returncode == 0, submitted.stderr
    asked = submitted.stdout.split()[1].rstrip(":")
    assert submitted.stdout.strip() == f"task {asked}: asked; `longtask watch {asked}` follows it"
    shown = await wait_status(stack.client, asked, {"completed"})
    assert shown["params"] == {"question": "Which documents are there?", "max_steps": 3}


def test_the_cli_checks_max_steps_against_the_servers_own_limit() -> None:
    assert client_args.MAX_STEPS == agent.MAX_STEPS
