"""longtask as a user installs it: the wheel, in fresh venvs, run outside the checkout.

- `pip install longtask` is the client and the CLI: small, and nothing server-side loads.
- `longtask[server]` runs the web and the worker with no torch, embeddings from an
  OpenAI-compatible endpoint (the project's test server).
- `longtask demo` works from the wheel in another folder: samples, dashboard and migrations are
  package data, and the processes start from the package's own entry points.

The venvs (tests/installs.py) are built once per session, in a temp dir. Slow (a minute or
two): `pytest -m "not slow"` skips them; `make test` runs them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from longtask.dev.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from longtask.store import api_keys
from longtask.testing.fake_openai import FakeOpenAI
from tests.conftest import Services
from tests.installs import Venv, pin, run, scratch_dir, user_env
from tests.support import ROOT, SAMPLES, Web, Worker, fake_providers, service_env, wait_status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLIENT_MAX_BYTES = 40_000_000  # issue 15: `pip install longtask` under 40 MB
SERVER_SIDE = ("asyncpg", "arq", "redis", "starlette", "uvicorn", "torch", "prometheus_client")
LOADED = ("import sys, {module}; "
          "print(' '.join(sorted({{m.partition('.')[0] for m in sys.modules}} & {banned!r})))")


def loaded(venv: Venv, module: str) -> list[str]:
    """The server-side packages that importing `module` loads in `venv`."""
    done = venv.run("python", "-c", LOADED.format(module=module, banned=set(SERVER_SIDE)))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.fixture(scope="session")
def packaging_dir() -> Iterator[Path]:
    with scratch_dir("longtask-packaging-") as root:
        yield root


@pytest.fixture(scope="session")
def wheel(packaging_dir: Path) -> Path:
    """The wheel, built from a copy of the checkout's sources (the build writes no file here)."""
    source = packaging_dir / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    started = time.monotonic()
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
          "--no-deps", "--wheel-dir", str(packaging_dir / "dist"), str(source)], timeout=300)
    built = next((packaging_dir / "dist").glob("longtask-*.whl"))
    print(f"\nwheel {built.name}: {built.stat().st_size / 1e3:.0f} kB "
          f"in {time.monotonic() - started:.1f} s")
    return built


@pytest.fixture(scope="session")
def client_venv(packaging_dir: Path, wheel: Path) -> Venv:
    return Venv(packaging_dir / "client", str(wheel))


@pytest.fixture(scope="session")
def server_venv(packaging_dir: Path, wheel: Path) -> Venv:
    return Venv(packaging_dir / "server", f"{wheel}[server]")


@pytest.fixture(scope="session")
def demo_venv(packaging_dir: Path, wheel: Path) -> Venv:
    """The cheapest install that runs `longtask demo` on its own: the server and embedded
    PostgreSQL (pgserver), with embeddings from the test server instead of torch."""
    return Venv(packaging_dir / "demo", f"{wheel}[server]", pin("pgserver"))


# 1. `pip install longtask`: the client and the CLI only

def test_the_client_install_is_small_and_has_no_server_packages(client_venv: Venv) -> None:
    size = client_venv.size
    print(f"client-only site-packages: {size / 1e6:.1f} MB")
    assert size < CLIENT_MAX_BYTES, f"{size / 1e6:.1f} MB"
    installed = {p.name.split("-")[0].lower()
                 for p in client_venv.site_packages.glob("*.dist-info")}
    assert not installed & {"asyncpg", "arq", "redis", "starlette", "uvicorn", "torch"}
    assert {"httpx", "httpx_sse", "rich", "longtask"} <= installed


def test_the_client_imports_nothing_server_side(client_venv: Venv, server_venv: Venv) -> None:
    assert loaded(client_venv, "longtask.client") == []
    # the job-author API (`import longtask`: kind, JobContext, errors) loads no I/O library either
    assert loaded(server_venv, "longtask") == []
    # where the server packages are installed, the client still does not load them
    assert loaded(server_venv, "longtask.client") == []
    assert loaded(server_venv, "longtask.cli") == []


def test_the_cli_runs_from_the_client_install(client_venv: Venv) -> None:
    helped = client_venv.run("longtask", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "submit" in helped.stdout and "demo" in helped.stdout
    # a client command runs all the way: here to a port where nothing listens
    refused = client_venv.run("longtask", "ls", "--url", "http://127.0.0.1:9", "--key", "lt_x")
    assert refused.returncode == 1 and "connection_failed" in refused.stderr
    for command in (["migrate"], ["web"], ["worker"], ["keys", "create", "--tenant", "t"],
                    ["dev"], ["demo"]):
        refused = client_venv.run("longtask", *command)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr  # one line, no traceback
        assert "pip install 'longtask[server]'" in refused.stderr


# 2. `longtask[server]`: web and worker with no torch, embeddings from an OpenAI-compatible URL

async def test_the_server_extra_runs_web_and_worker_without_torch(
        server_venv: Venv, services: Services, pool: asyncpg.Pool, redis: Redis) -> None:
    no_torch = server_venv.run("python", "-c", "import torch")
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr
    with FakeOpenAI() as fake:
        # the session's settings, less the checkout's code (PYTHONPATH) and its test kinds; a
        # queue of its own, so that no worker of the checkout's takes these jobs
        env = {**service_env(services.postgres.url, services.redis.url), **fake_providers(fake),
               "LONGTASK_QUEUE": "longtask:wheel-server"}
        env = {k: v for k, v in env.items()
               if k not in ("PYTHONPATH", "LONGTASK_KINDS", "VIRTUAL_ENV")}
        python, logs, cwd = str(server_venv.python), services.root / "logs", server_venv.path
        web = Web("wheel-web", env, logs, python=python, cwd=cwd,
                  app=("--factory", "longtask.web.app:app_from_env")).start()
        worker = Worker("wheel-worker", env, logs, python=python, cwd=cwd,
                        settings="longtask.worker.main.WorkerSettings").start()
        try:
            await web.ready()
            await worker.ready(redis)
            key = await api_keys.create(pool, "tenant-a", "wheel")
            async with httpx.AsyncClient(base_url=web.url, timeout=30,
                                         headers={"Authorization": f"Bearer {key}"}) as client:
                pdf = (SAMPLES / "sourdough.pdf").read_bytes()
                answer = await client.post("/documents", files=[
                    ("files", ("sourdough.pdf", pdf, "application/pdf"))])
                assert answer.status_code == 202, answer.text
                task = await wait_status(client, answer.json()["id"],
                                         {"completed", "failed"}, timeout=90)
                assert task["status"] == "completed", task
                assert task["result"]["status"] == "indexed", task
                hits = (await client.get("/search", params={"q": "levain", "k": 1})).json()
                assert hits["results"][0]["filename"] == "sourdough.pdf"
                # the dashboard is package data too
                page = await client.get("/")
                assert page.status_code == 200 and "<html" in page.text.lower()
                assert (await client.get("/static/app.js")).status_code == 200
            assert fake.calls("/v1/embeddings") > 0
        finally:
            web.terminate()
            worker.terminate()
        assert "torch" not in web.tail(400) + worker.tail(400)


# 3. `longtask demo` from the wheel, in a folder that is not the checkout

async def test_demo_runs_from_the_wheel_outside_the_checkout(demo_venv: Venv,
                                                            packaging_dir: Path) -> None:
    here = packaging_dir / "elsewhere"
    here.mkdir()
    os.chmod(here, 0o755)
    with FakeOpenAI() as fake:
        env = user_env(**fake_providers(fake), PORT=str(free_port()), LOG_LEVEL="WARNING")
        try:
            demo = await asyncio.to_thread(demo_venv.run, "longtask", "demo", "--query", "levain",
                                          env=env, cwd=here, timeout=300)
        finally:  # the demo leaves its embedded services running for the next command
            EmbeddedRedis(here / ".data" / "redis").stop()
            EmbeddedPostgres(here / ".data" / "pg").stop()
    print(demo.stdout[-2000:])
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "uploaded 4 PDFs" in demo.stdout
    assert "task completed: 4 indexed, 0 failed" in demo.stdout
    first_hit = demo.stdout.split("search 'levain':\n", 1)[1].splitlines()[0]
    assert "sourdough.pdf" in first_hit
    # it ran in a folder of its own: its embedded services' data is there
    assert (here / ".data" / "pg" / "PG_VERSION").exists()
