"""Ingest throughput: parse only, embed only, and end to end, with 1 and 2 workers.

    .venv/bin/python -m bench.ingest [--pages 100] [--docs 4] [--rss-pages 1000]
                                     [--before f0bff47] [--rounds 2]

Parse only: PyMuPDF text extraction through longtask's process pool (1 and 2 processes).
Embed only: all-MiniLM-L6-v2 on the corpus's chunks (1 process, and 2 processes at once).
End to end: upload the corpus to a real web process; 1 or 2 ARQ worker processes parse,
chunk, summarise (extractive) and embed it; wall time from upload to the task's end.
The corpus: the samples plus `--docs` generated PDFs of `--pages` pages each.
Before and after retrieval (issue 18: chunks counted by the model's tokenizer, a language and a
tsvector per chunk): the same upload, re-ingested by one worker running main as it was before
(`--before`, its src taken with `git archive`) and one running this checkout, taking turns,
`--rounds` times each, in the same run and on the same services; the median wall times compared.
Peak RSS: one worker ingests one generated PDF of `--rss-pages` pages; VmHWM of the worker and
of each of its child processes (the parser pool), sampled from /proc every 0.1 s.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from bench._report import Report, cli
from bench._stack import ROOT, Stack, descendants, proc_status
from longtask.pipeline.chunk import chunk_pages
from longtask.pipeline.pdf import ParseUsage, PdfParser
from longtask.pipeline.tokenize import local
from longtask.samples import FOLDER as SAMPLES
from longtask.testing import pdfs


def corpus(pages: int, docs: int) -> list[tuple[str, bytes]]:
    files = [(f"{s.filename}.pdf", (SAMPLES / f"{s.filename}.pdf").read_bytes())
             for s in pdfs.SAMPLES]
    files += [(f"generated-{i}.pdf", pdfs.many_pages_pdf(pages, seed=i)) for i in range(docs)]
    return files


async def parse_only(paths: list[str], processes: int) -> tuple[int, float, list[list[str]]]:
    parser = PdfParser(processes)
    try:
        await parser.probe(paths[0], 10_000, ParseUsage())  # start the processes untimed
        started = time.perf_counter()

        async def one(path: str) -> list[str]:
            usage = ParseUsage()
            info = await parser.probe(path, 10_000, usage)
            texts: list[str] = []
            for first in range(1, info.pages + 1, 20):
                texts += await parser.pages(path, first, min(first + 19, info.pages), usage)
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


# main before issue 18's chunking and hybrid search (the merge's first parent)
BEFORE_RETRIEVAL = "f0bff47"


def source_at(ref: str, into: Path) -> Path:
    """The src/ of `ref` in this checkout's history, written under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


async def end_to_end(stack: Stack, files: list[tuple[str, bytes]], workers: int,
                     watch: dict[str, int] | None = None, src: Path | None = None) -> float:
    """Seconds from upload to the ingest task's end, on `workers` fresh worker processes (each
    with the local embedding model; running the code in `src`, if given). With `watch`, the
    peak VmHWM of each worker process and of its children (parser pool, ...) is kept there
    (keys `worker PID`, `child PID`), sampled every 0.1 s."""
    env = {"LONGTASK_QUEUE": f"bench:ingest:{workers}:{len(files)}", "LONGTASK_EMBED_URL": "",
           "LONGTASK_WORKER_CONCURRENCY": "4"}
    code = {} if src is None else {"PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    web = await stack.web(f"web-{workers}-{len(files)}", **env)
    procs = await stack.workers(workers, f"worker-{workers}-{len(files)}", **env, **code)
    try:
        await asyncio.sleep(8)  # let each worker load its model before the clock starts
        sampler = asyncio.create_task(_sample_peaks([p.pid for p in procs], watch)) \
            if watch is not None else None
        async with stack.client(web, timeout=600) as client:
            started = time.perf_counter()
            upload = [("files", (n, d, "application/pdf")) for n, d in files]
            task = (await client.post("/documents", files=upload,
                                      data={"reindex": "true"})).json()
            await stack.wait_tasks_done([task["id"]], timeout=1800)
            elapsed = time.perf_counter() - started
            final = (await client.get(f"/tasks/{task['id']}")).json()
        if sampler is not None:
            sampler.cancel()
        if final["status"] != "completed":
            raise RuntimeError(f"the ingest task ended {final['status']}: {final}")
        return elapsed
    finally:
        for proc in procs:
            stack.stop(proc)
        stack.stop(web)


async def _sample_peaks(pids: list[int], peaks: dict[str, int]) -> None:
    while True:
        for pid in pids:
            for key, one in ((f"worker {pid}", pid),
                             *((f"child {c}", c) for c in descendants(pid))):
                peaks[key] = max(peaks.get(key, 0), proc_status(one, "VmHWM"))
        await asyncio.sleep(0.1)


async def before_and_after(report: Report, stack: Stack, files: list[tuple[str, bytes]],
                           ref: str, rounds: int, scratch: Path) -> None:
    before = source_at(ref, scratch / "before")
    seconds: dict[str, list[float]] = {"before": [], "now": []}
    for _ in range(rounds):
        seconds["before"].append(await end_to_end(stack, files, 1, src=before))
        seconds["now"].append(await end_to_end(stack, files, 1))
    now, then = statistics.median(seconds["now"]), statistics.median(seconds["before"])
    report.add("re-ingest, 1 worker: wall time", now, "s", baseline=then,
               baseline_name=f"main at {ref}, before retrieval", target="<= 1.5x baseline",
               met=now <= 1.5 * then)
    report.note(f"before and after retrieval, {rounds} rounds each, taking turns: now "
                + ", ".join(f"{s:.1f}" for s in seconds["now"]) + f" s; at {ref} "
                + ", ".join(f"{s:.1f}" for s in seconds["before"]) + " s")


async def run(report: Report, pages: int, docs: int, rss_pages: int, before: str,
              rounds: int) -> None:
    files = corpus(pages, docs)
    scratch = Path(tempfile.mkdtemp(prefix="longtask-bench-"))
    paths = []
    for name, data in files:
        (scratch / name).write_bytes(data)
        paths.append(str(scratch / name))

    try:
        total, texts = 0, []
        for processes in (1, 2):
            total, seconds, texts = await parse_only(paths, processes)
            report.add(f"parse only, {processes} process(es)", total / seconds, "pages/s")
        chunks = [c.text for t in texts for c in chunk_pages(t, local())]
        load = model_load_seconds()
        for processes in (1, 2):
            seconds = embed_only(chunks, processes) - load
            report.add(f"embed only, {processes} process(es)", len(chunks) / seconds, "chunks/s")

        async with Stack() as stack:
            for workers in (1, 2):
                seconds = await end_to_end(stack, files, workers)
                report.add(f"end to end, {workers} worker(s)", total / seconds, "pages/s")
            if before and rounds:
                await before_and_after(report, stack, files, before, rounds, scratch)
            peaks: dict[str, int] = {}
            big = [("big.pdf", pdfs.many_pages_pdf(rss_pages, seed=99))]
            seconds = await end_to_end(stack, big, 1, watch=peaks)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    worker_peak = sum(v for k, v in peaks.items() if k.startswith("worker"))
    children = sorted((v for k, v in peaks.items() if k.startswith("child")), reverse=True)
    whole = worker_peak + sum(children)
    report.add(f"worker peak RSS, {rss_pages}-page PDF", worker_peak / 2**20, "MiB")
    report.add(f"worker + {len(children)} children, sum of peaks", whole / 2**20, "MiB",
               target="< 1 GB", met=whole < 2**30)
    report.note(f"corpus: {len(files)} PDFs, {total} pages, {len(chunks)} chunks; model load "
                f"{load:.1f} s (subtracted from embed only); the {rss_pages}-page PDF took "
                f"{seconds:.1f} s end to end; children's peaks: "
                + ", ".join(f"{c / 2**20:,.0f} MiB" for c in children))


def main() -> None:
    cli("bench.ingest", "6. Ingest", __doc__, run, pages=100, docs=4, rss_pages=1000,
        before=BEFORE_RETRIEVAL, rounds=2)


if __name__ == "__main__":
    main()
