"""Ingest throughput: parse only, embed only, and end to end, with 1 and 2 workers.

    .venv/bin/python -m bench.ingest [--pages 100] [--docs 4]

Parse only: PyMuPDF text extraction through longtask's process pool (1 and 2 processes).
Embed only: all-MiniLM-L6-v2 on the corpus's chunks (1 process, and 2 processes at once).
End to end: upload the corpus to a real web process; 1 or 2 ARQ worker processes parse,
chunk, summarise (extractive) and embed it; wall time from upload to the task's end.
The corpus: the samples plus `--docs` generated PDFs of `--pages` pages each.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from longtask.pipeline.chunk import chunk_pages  # noqa: E402
from longtask.pipeline.pdf import PdfParser  # noqa: E402
from longtask.testing import pdfs  # noqa: E402
from tests.support import Web, Worker, service_env, wait_for  # noqa: E402


def corpus(pages: int, docs: int) -> list[tuple[str, bytes]]:
    files = [(f"{s.filename}.pdf", (ROOT / "samples" / f"{s.filename}.pdf").read_bytes())
             for s in pdfs.SAMPLES]
    files += [(f"generated-{i}.pdf", pdfs.many_pages_pdf(pages, seed=i)) for i in range(docs)]
    return files


async def parse_only(paths: list[str], processes: int) -> tuple[int, float, list[list[str]]]:
    parser = PdfParser(processes)
    try:
        await parser.probe(paths[0], 10_000)  # start the processes outside the timing
        started = time.perf_counter()

        async def one(path: str) -> list[str]:
            info = await parser.probe(path, 10_000)
            texts: list[str] = []
            for first in range(1, info.pages + 1, 20):
                texts += await parser.pages(path, first, min(first + 19, info.pages))
            return texts

        texts = await asyncio.gather(*(one(p) for p in paths))
        return sum(len(t) for t in texts), time.perf_counter() - started, list(texts)
    finally:
        parser.close()


def _embed_share(texts: list[str]) -> None:
    from longtask.pipeline.embed import LocalEmbedder

    async def run() -> None:
        embedder = LocalEmbedder()
        await embedder.warm()
        await embedder.embed(texts)
        embedder.close()

    asyncio.run(run())


def embed_only(chunks: list[str], processes: int) -> float:
    """Seconds to embed `chunks` split over `processes` (model loading included, see note)."""
    share = [chunks[i::processes] for i in range(processes)]
    ctx = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    procs = [ctx.Process(target=_embed_share, args=(s,)) for s in share]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return time.perf_counter() - started


def model_load_seconds() -> float:
    ctx = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    p = ctx.Process(target=_embed_share, args=(["x"],))
    p.start()
    p.join()
    return time.perf_counter() - started


async def end_to_end(files: list[tuple[str, bytes]], workers: int, root: Path, db: str,
                     redis_url: str, key: str) -> float:
    env = service_env(db, redis_url, LONGTASK_QUEUE=f"bench:{workers}",
                      LONGTASK_WORKER_CONCURRENCY="4", LOG_LEVEL="WARNING")
    web = await Web(f"bench-web-{workers}", env, root).start().ready()
    procs = [Worker(f"bench-worker-{workers}-{i}", env, root).start() for i in range(workers)]
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        for proc in procs:
            await proc.ready(redis, timeout=60)
        await asyncio.sleep(8)  # let each worker load its model before the clock starts
        async with httpx.AsyncClient(base_url=web.url, timeout=120,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            started = time.perf_counter()
            upload = [("files", (n, d, "application/pdf")) for n, d in files]
            task = (await client.post("/documents", files=upload,
                                      data={"reindex": "true"})).json()

            async def done() -> bool:
                status = (await client.get(f"/tasks/{task['id']}")).json()["status"]
                return status in ("completed", "failed")

            await wait_for(done, timeout=1800, what="the ingest task", interval=0.2)
            elapsed = time.perf_counter() - started
            final = (await client.get(f"/tasks/{task['id']}")).json()
            assert final["status"] == "completed", final
            return elapsed
    finally:
        await redis.aclose()
        for proc in procs:
            proc.terminate()
        web.terminate()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--docs", type=int, default=4)
    args = parser.parse_args()
    files = corpus(args.pages, args.docs)
    scratch = Path(tempfile.mkdtemp(prefix="longtask-bench-"))
    os.chmod(scratch, 0o755)
    paths = []
    for name, data in files:
        (scratch / name).write_bytes(data)
        paths.append(str(scratch / name))

    rows: list[tuple[str, str, str]] = []
    pages, texts = 0, []
    for processes in (1, 2):
        pages, seconds, texts = await parse_only(paths, processes)
        rows.append((f"parse only, {processes} process(es)", f"{pages} pages",
                     f"{pages / seconds:,.0f} pages/s"))
    chunks = [c.text for t in texts for c in chunk_pages(t)]
    load = model_load_seconds()
    for processes in (1, 2):
        seconds = embed_only(chunks, processes) - load
        rows.append((f"embed only, {processes} process(es)", f"{len(chunks)} chunks",
                     f"{len(chunks) / seconds:,.1f} chunks/s"))

    from longtask.db.migrate import migrate
    from longtask.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
    from longtask.store import api_keys
    from longtask.db import create_pool

    pg = EmbeddedPostgres(scratch / "pg", free_port())
    rd = EmbeddedRedis(scratch / "redis", free_port())
    pg.start()
    rd.start()
    try:
        await migrate(pg.url)
        pool = await create_pool(pg.url)
        key = await api_keys.create(pool, "bench")
        await pool.close()
        for workers in (1, 2):
            seconds = await end_to_end(files, workers, scratch, pg.url, rd.url, key)
            rows.append((f"end to end, {workers} worker(s)", f"{pages} pages",
                         f"{pages / seconds:,.1f} pages/s ({seconds:.1f} s)"))
    finally:
        rd.kill()
        pg.stop()

    print(f"\ncorpus: {len(files)} PDFs, {pages} pages, {len(chunks)} chunks; "
          f"{os.cpu_count()} cores; model load {load:.1f} s (subtracted from embed only)\n")
    print("| measurement | work | rate |\n|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")


if __name__ == "__main__":
    asyncio.run(main())
