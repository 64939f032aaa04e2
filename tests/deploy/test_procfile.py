"""The Procfile as a platform runs it: built as a Python buildpack builds it, run by honcho.

The build is what a buildpack does with this repository: the files `git push` sends, a fresh
venv, `pip install -r requirements.txt` (the lock file), and nothing else: no `-e`, no extras
of ours, no torch. honcho (a Procfile runner, as `heroku local`) then runs the release phase, and
`web` and `worker` with WEB_CONCURRENCY=2 against the session's Postgres (a database of the
test's own, named in the `postgres://` form platforms use) and Redis, with embeddings and the
LLM from the project's OpenAI-compatible test server. Slow (minutes, needs the index):
`pytest -m "not slow"` skips it; `make test` runs it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from longtask import samples
from longtask.dev.embedded import free_port
from longtask.testing import pdfs
from longtask.testing.fake_openai import FakeOpenAI
from tests.conftest import Services
from tests.installs import Venv, normalise, scratch_dir, user_env
from tests.support import METRICS_TOKEN, ROOT, fake_providers, sse_events, task_status, wait_for
from tests.test_metrics import Samples, label_values, scrape, total

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SLUG_MAX_BYTES = 300_000_000  # issue 16: over 300 MB a slug boots slowly
HONCHO = Path(sys.executable).parent / "honcho"
NOT_IN_THE_SLUG = {"torch", "transformers", "sentence-transformers", "pgserver"}
APP_REDIS_DB = 7  # the session's Redis, in a database no other process of the tests uses


@pytest.fixture(scope="module")
def build_dir() -> Iterator[Path]:
    with scratch_dir("longtask-build-") as root:
        yield root


@pytest.fixture(scope="module")
def app_dir(build_dir: Path) -> Path:
    """What `git push` sends: the checkout's files that git tracks or would track."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    app = build_dir / "app"
    for name in filter(None, (n.decode() for n in listed)):
        if (ROOT / name).is_file():
            (app / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, app / name)
    return app


@pytest.fixture(scope="module")
def slug(build_dir: Path, app_dir: Path) -> Venv:
    """The buildpack's install: what requirements.txt names, and nothing else."""
    return Venv(build_dir / "venv", "-r", "requirements.txt", cwd=app_dir)


def locked() -> dict[str, str]:
    """requirements.txt's pins: normalised name -> version."""
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return {normalise(name): version for name, _, version in
            (line.partition("==") for line in lines if "==" in line and not line.startswith("#"))}


def server_pins() -> dict[str, str]:
    """pyproject.toml's pins of `pip install longtask[server]`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [r.partition("==") for r in [*project["dependencies"],
                                        *project["optional-dependencies"]["server"]]]
    return {normalise(name.partition("[")[0]): version for name, _, version in pins}


def test_the_lock_file_installs_the_server_alone_and_fits(slug: Venv) -> None:
    size = slug.size
    print(f"buildpack install (requirements.txt): site-packages {size / 1e6:.1f} MB")
    assert size < SLUG_MAX_BYTES, f"{size / 1e6:.1f} MB"
    installed = slug.distributions()
    assert not installed.keys() & NOT_IN_THE_SLUG
    assert "longtask" in installed
    # fully pinned: every package the install brought is in the lock, at the lock's version
    pins = locked()
    assert {n: v for n, v in installed.items() if n != "longtask" and pins.get(n) != v} == {}
    # and the lock is current: it holds pyproject.toml's own pins of the server
    assert {n: pins.get(n) for n in server_pins()} == server_pins()
    no_torch = slug.run("python", "-c", "import torch")
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr


@dataclass
class App:
    """The Procfile app's add-ons: a database of its own and a Redis database of its own."""

    database_url: str
    redis_url: str


@pytest.fixture
async def app_services(services: Services) -> AsyncIterator[App]:
    name = f"procfile_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(services.postgres.url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    server = services.postgres.url.rsplit("/", 1)[0]
    redis_url = f"{services.redis.url.rsplit('/', 1)[0]}/{APP_REDIS_DB}"
    try:
        # platforms hand out `postgres://`, which asyncpg and libpq both take
        yield App(f"{server.replace('postgresql://', 'postgres://', 1)}/{name}", redis_url)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        async with Redis.from_url(redis_url) as redis:
            await redis.flushdb()


async def test_the_procfile_runs_under_honcho(slug: Venv, app_dir: Path, build_dir: Path,
                                             app_services: App) -> None:
    port = free_port()
    with FakeOpenAI() as fake:
        env = user_env(PATH=f"{slug.bin}:{os.environ['PATH']}", PORT=str(port),
                       DATABASE_URL=app_services.database_url, REDIS_URL=app_services.redis_url,
                       WEB_CONCURRENCY="2", LONGTASK_METRICS_TOKEN=METRICS_TOKEN,
                       **fake_providers(fake))
        release = await asyncio.to_thread(
            subprocess.run, [str(HONCHO), "start", "release"], cwd=app_dir, env=env,
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert release.returncode == 0, release.stdout + release.stderr
        assert "applied: 0001_" in release.stdout, release.stdout
        made = await asyncio.to_thread(slug.run, "longtask", "keys", "create", "--tenant",
                                       "procfile", env=env, cwd=app_dir)
        assert made.returncode == 0, made.stderr
        headers = {"Authorization": f"Bearer {made.stdout.strip()}"}

        log_path = build_dir / "honcho.log"
        with open(log_path, "wb") as log:
            honcho = subprocess.Popen([str(HONCHO), "start", "web", "worker"], cwd=app_dir,
                                      env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            answered: list[httpx.Response] = []

            async def count(response: httpx.Response) -> None:
                answered.append(response)

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers,
                                         timeout=60, event_hooks={"response": [count]}) as client:
                await _wait_ready(client, honcho, log_path)
                metrics = f"http://127.0.0.1:{port}/metrics"
                # counted so far: /ready's polls (one may have timed out here, answered there)
                before = total(await scrape(metrics), "longtask_http_requests_total")
                answered.clear()
                await _upload_five_and_follow(client)
            await _metrics_add_up(metrics, before + 1 + len(answered))  # 1: the scrape above
            processes = _descendants(honcho.pid)
            assert len(processes) >= 4, processes  # web: a supervisor and two; a worker
            honcho.send_signal(signal.SIGTERM)
            await asyncio.to_thread(honcho.wait, 30)  # a platform's SIGKILL comes at 30 s
            output = log_path.read_text(errors="replace")
            assert "SIGKILL" not in output, output[-3000:]  # honcho's own, after 5 s
            # each shut down as it should: both web processes let go of their clients, the
            # worker waited for its jobs
            assert output.count("Application shutdown complete") == 2, output[-3000:]
            assert "shutdown on SIGTERM, wait complete" in output, output[-3000:]

            async def all_gone() -> bool:
                return not [pid for pid in processes if Path(f"/proc/{pid}").exists()
                            and not _is_zombie(pid)]

            await wait_for(all_gone, timeout=5, what="every process of the app to exit")
        finally:
            if honcho.poll() is None:
                os.killpg(honcho.pid, signal.SIGKILL)
                honcho.wait()
    print(output[-3000:])


async def _wait_ready(client: httpx.AsyncClient, honcho: subprocess.Popen[bytes],
                      log_path: Path) -> None:
    async def ready() -> bool:
        assert honcho.poll() is None, log_path.read_text(errors="replace")[-3000:]
        try:
            return (await client.get("/ready", timeout=2)).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(ready, timeout=90, what="the web to be ready", interval=0.2)


async def _upload_five_and_follow(client: httpx.AsyncClient) -> None:
    files = [(p.name, p.read_bytes()) for p in samples.paths()]
    files.append(("notes.pdf", pdfs.text_pdf("Deploy notes", ["Release, web and worker."])))
    assert len(files) == 5
    answer = await client.post("/documents", files=[
        ("files", (name, data, "application/pdf")) for name, data in files])
    assert answer.status_code == 202, answer.text
    task_id = answer.json()["id"]
    events = await sse_events(client, task_id, timeout=240)  # until the stream ends
    task = await task_status(client, task_id)
    assert task["status"] == "completed", task
    assert task["result"]["completed"] == 5, task["result"]
    finished = {d["name"] for _, e, d in events if e == "item" and d["status"] == "completed"}
    assert finished == {name for name, _ in files}
    assert any(e == "progress" for _, e, _ in events)


async def _metrics_add_up(url: str, answered: float) -> None:
    """Whichever of the two web processes answers a scrape counts the `answered` requests of
    both; the worker's item counters are there too, with no port of its own."""
    first = await scrape(url)
    assert total(first, "longtask_http_requests_total") == answered
    second = await scrape(url)
    assert total(second, "longtask_http_requests_total") == answered + 1  # the first scrape

    async def items_published() -> Samples:
        samples = await scrape(url)
        done = {labels: v for (n, labels), v in samples.items() if n == "longtask_items_total"
                and {("kind", "ingest"), ("outcome", "completed")} <= labels}
        return samples if sum(done.values()) == 5 else {}

    published = await wait_for(items_published, timeout=30, what="the worker's item counts")
    assert len(label_values(published, "longtask_items_total", "worker")) == 1


def _descendants(pid: int) -> list[int]:
    """The processes under `pid`, from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
