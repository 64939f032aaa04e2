"""The `longtask` command.

    longtask migrate                       apply the SQL migrations (the Procfile's release)
    longtask keys create --tenant NAME     make an API key (printed once, stored hashed)
    longtask dev                           embedded services + migrations + web + worker
    longtask demo                          `dev`, then ingest the samples live and search them

    longtask submit FILES... [--follow]    upload PDFs to a server; --follow shows them live
    longtask ask QUESTION [--follow]       an agent run over the documents; --follow shows its
                                           steps, the answer as it is written, the citations
    longtask watch ID                      follow a task live (Ctrl-C offers to cancel it)
    longtask ls | show ID | cancel ID | retry ID | search QUERY
                                           (server and key: --url/--key or LONGTASK_URL and
                                            LONGTASK_API_KEY; exit 0 completed, 1 failed,
                                            2 usage or configuration, 130 Ctrl-C)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from longtask.client import cli as client_cli
from longtask.dev import embedded
from longtask.db import create_pool
from longtask.db.migrate import migrate
from longtask.core.errors import ConfigError
from longtask.config import Settings
from longtask.store import api_keys

DEV_TENANT = "dev"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="longtask", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply the SQL migrations")
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="make an API key for a tenant")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="")
    dev = sub.add_parser("dev", help="run everything locally on embedded defaults")
    dev.add_argument("--workers", type=int, default=1)
    demo = sub.add_parser("demo", help="run everything locally: ingest the samples, search them")
    demo.add_argument("--query", default="how long should the levain rise before mixing?")
    client_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    if (code := client_cli.run(args)) is not None:
        return code
    try:
        settings = embedded.resolve(Settings.from_env())
        if args.command == "migrate":
            applied = asyncio.run(migrate(_db(settings)))
            print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
        elif args.command == "keys":
            print(asyncio.run(_create_key(settings, args.tenant, args.name)))
        elif args.command == "dev":
            return _dev(settings, args.workers)
        elif args.command == "demo":
            return _demo(settings, args.query)
    except ConfigError as exc:
        print(f"longtask: {exc}", file=sys.stderr)
        return 2
    return 0


def _db(settings: Settings) -> str:
    assert settings.database_url
    return settings.database_url


async def _create_key(settings: Settings, tenant: str, name: str) -> str:
    pool = await create_pool(_db(settings), min_size=1, max_size=1)
    try:
        return await api_keys.create(pool, tenant, name)
    finally:
        await pool.close()


def _dev(settings: Settings, workers: int) -> int:
    with _running(settings, workers) as (url, key):
        print(f"longtask is up at {url}\nAPI key for tenant {DEV_TENANT!r}: {key}\n"
              f"try: curl -H 'Authorization: Bearer {key}' {url}/stats\nCtrl-C stops.",
              flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # sigwait needs them blocked
        signal.sigwait(stop)
    return 0


def _demo(settings: Settings, query: str) -> int:
    """Ingest the samples, follow the task live, then search them."""
    samples = sorted((Path(__file__).resolve().parents[2] / "samples").glob("*.pdf"))
    with _running(settings, 1, quiet=True) as (url, key):
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            files = [("files", (p.name, p.read_bytes(), "application/pdf")) for p in samples]
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
    """Embedded services, migrations, a dev key, and web + worker processes until exit."""
    asyncio.run(migrate(_db(settings)))
    key = asyncio.run(_create_key(settings, DEV_TENANT, "dev"))
    env = {**os.environ, "DATABASE_URL": _db(settings), "REDIS_URL": settings.redis_url or ""}
    if quiet:
        env["LOG_LEVEL"] = "WARNING"
    url = f"http://127.0.0.1:{settings.port}"
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-m", "uvicorn", "server:app", "--host",
                               "127.0.0.1", "--port", str(settings.port), "--log-level",
                               "warning" if quiet else "info"], env=env, cwd=root)]
    procs += [subprocess.Popen([sys.executable, "-m", "arq", "worker.WorkerSettings"], env=env,
                               cwd=root) for _ in range(workers)]
    try:
        _wait_ready(url, key, procs)
        yield url, key
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_ready(url: str, key: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise ConfigError("a web or worker process exited during start-up; see its log above")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise ConfigError(f"longtask did not become ready at {url} within 60 s")


if __name__ == "__main__":
    sys.exit(main())
