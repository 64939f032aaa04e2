"""Retrieval: how often search finds the page that answers a question, and how fast it is.

    .venv/bin/python -m bench.retrieval [--manuals 6] [--pages 30] [--small 10000]
                                        [--big 200000] [--queries 200]

Quality: the four samples plus `--manuals` generated maintenance manuals of `--pages` pages (each
page one component of one machine, with its part number, torque, service interval and an error
code; the rest of the page is the boilerplate every page of a manual repeats) are ingested through
a real web process and worker (all-MiniLM-L6-v2, offline). A question set of our own (questions
written for the samples, and three kinds per manual: a part number, an error code, an interval
asked in words) asks GET /search for the page that answers it, in each mode: hit@1, hit@5 and MRR
(over the top 10; a hit is a chunk of the right file whose pages include the right page).

Speed and recall: tenants of `--small` and `--big` chunks of synthetic 384-dimension unit vectors
grouped in topics of about 100 chunks, as embeddings of real text are (testing/corpus.py: their
nearest neighbours as near, and their local dimension as low, as all-MiniLM-L6-v2's on real
text), and Zipf-drawn made-up words for the text side, written straight into the tables under a
model of their own whose HNSW index is built after the load, plus a tenant of 5. The search
function itself (store.search: the SQL, no HTTP, no embedding) is timed per query, p50 and p99,
vector and hybrid; queries are drawn as the chunks were; recall@10 of each tenant's vector search
against a brute-force scan in numpy.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import numpy as np

from bench._report import Report, cli
from bench._stack import Stack, percentile
from longtask.pipeline.embed import LOCAL_DIM
from longtask.samples import FOLDER as SAMPLES
from longtask.store import documents, search
from longtask.testing import corpus, pdfs

MODES = ("vector", "text", "hybrid")
SYNTHETIC_MODEL = "synthetic-384"
CHUNKS_PER_TOPIC = 100


@dataclass(frozen=True)
class Question:
    text: str
    filename: str
    page: int
    kind: str


SAMPLE_QUESTIONS = [
    Question("What powers the movement of water between the oceans and the air?",
             "water-cycle.pdf", 1, "sample"),
    Question("How do plants put water back into the atmosphere?", "water-cycle.pdf", 1, "sample"),
    Question("Why do clouds form when humid air goes up?", "water-cycle.pdf", 2, "sample"),
    Question("How much evaporated water falls straight back into the sea?", "water-cycle.pdf", 2,
             "sample"),
    Question("How long can water stay in an aquifer?", "water-cycle.pdf", 3, "sample"),
    Question("What is a sourdough starter made of?", "sourdough.pdf", 1, "sample"),
    Question("How quickly should the levain rise?", "sourdough.pdf", 2, "sample"),
    Question("What does the hydration of a dough mean?", "sourdough.pdf", 2, "sample"),
    Question("Why is the loaf cut with a razor before it goes in the oven?", "sourdough.pdf", 3,
             "sample"),
    Question("What happens to a value when its owner goes out of scope?", "rust-ownership.pdf", 1,
             "sample"),
    Question("Can two mutable references to one value exist at the same time?",
             "rust-ownership.pdf", 2, "sample"),
    Question("What are lifetime annotations for?", "rust-ownership.pdf", 3, "sample"),
    Question("When would I use RefCell or Arc?", "rust-ownership.pdf", 3, "sample"),
    Question("Who built the running machine in Mannheim?", "bicycle-history.pdf", 1, "sample"),
    Question("Why was the penny-farthing dangerous to ride?", "bicycle-history.pdf", 2, "sample"),
    Question("Who patented the pneumatic tyre, and when?", "bicycle-history.pdf", 3, "sample"),
]

MACHINES = ["hydraulic press", "cooling tower", "conveyor line", "packaging robot",
            "boiler plant", "wind turbine", "paint booth", "bottling line"]
PLACES = ["upper", "lower", "left", "right", "main", "auxiliary"]
COMPONENTS = ["pump", "valve", "filter", "bearing", "seal", "gearbox", "motor", "sensor",
              "actuator", "compressor", "coupling", "drive belt", "nozzle", "heat exchanger",
              "controller", "fan"]
BOILERPLATE = [
    "Always isolate the power supply and release stored pressure before any maintenance work.",
    "Wear protective gloves and safety glasses while working on the machine.",
    "Record every inspection and replacement in the maintenance log with the date and hours.",
    "Use only original spare parts; other parts void the warranty and may be unsafe.",
    "Clean the surrounding area and remove tools before the machine is started again.",
    "Check all fasteners for tightness after the first fifty operating hours.",
    "Dispose of used oil and filters according to local environmental regulations.",
    "Contact the service department if the fault persists after the steps above.",
]
REMEDIES = ["stop the machine and check the supply voltage", "clean the intake and restart",
            "let the unit cool down for thirty minutes", "replace the fuse on the control board",
            "refill the lubricant to the upper mark", "recalibrate the sensor from the panel"]


def manual(number: int, pages: int) -> tuple[str, list[str], list[Question]]:
    """A generated manual: its file name, its page texts and three questions per page."""
    rng = random.Random(number)
    machine = MACHINES[number % len(MACHINES)]
    filename = f"manual-{number}-{machine.replace(' ', '-')}.pdf"
    parts = rng.sample([(p, c) for p in PLACES for c in COMPONENTS], pages)
    texts, questions = [], []
    for page, (place, component) in enumerate(parts, 1):
        part = f"{rng.choice('ABCDEHKLMRSTX')}{rng.choice('ABCDEHKLMRSTX')}-{rng.randint(1000, 9999)}"
        code = f"E{rng.randint(100, 999)}"
        hours, torque = rng.choice([250, 500, 750, 1000, 1500, 2000, 4000]), rng.randint(8, 240)
        facts = (f"Section {page}: the {place} {component}. The {place} {component} of the "
                 f"{machine} has part number {part}. Tighten its mounting bolts to {torque} Nm "
                 f"and replace it every {hours} operating hours. If the display shows error "
                 f"code {code}, {rng.choice(REMEDIES)}.")
        filler = rng.sample(BOILERPLATE, 5)
        texts.append(" ".join(filler[:2] + [facts] + filler[2:]))
        questions += [
            Question(f"What is part number {part}?", filename, page, "part number"),
            Question(f"The {machine} shows error code {code}: what should I do?", filename, page,
                     "error code"),
            Question(f"How often does the {place} {component} of the {machine} need replacing?",
                     filename, page, "interval"),
        ]
    return filename, texts, questions


async def quality(report: Report, stack: Stack, manuals: int, pages: int) -> None:
    files = [(f"{s.filename}.pdf", (SAMPLES / f"{s.filename}.pdf").read_bytes())
             for s in pdfs.SAMPLES]
    questions = list(SAMPLE_QUESTIONS)
    for number in range(manuals):
        filename, texts, asked = manual(number, pages)
        files.append((filename, pdfs.text_pdf(filename, texts)))
        questions += random.Random(number).sample(asked, 3 * min(pages, 8))  # 8 pages' worth
    env = {"LONGTASK_EMBED_URL": "", "LONGTASK_QUEUE": "bench:retrieval"}
    web = await stack.web("web", **env)
    await stack.workers(1, "worker", **env)
    async with stack.client(web, timeout=600) as client:
        started = time.perf_counter()
        task = (await client.post("/documents", files=[
            ("files", (n, d, "application/pdf")) for n, d in files])).json()
        await stack.wait_tasks_done([task["id"]], timeout=1800)
        ingest_seconds = time.perf_counter() - started
        final = (await client.get(f"/tasks/{task['id']}")).json()
        if final["status"] != "completed":
            raise RuntimeError(f"the ingest task ended {final['status']}")
        ranks: dict[str, list[int | None]] = {mode: [] for mode in MODES}
        seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
        for question in questions:
            for mode in MODES:
                began = time.perf_counter()
                hits = await _search(client, question.text, mode)
                seconds[mode].append(time.perf_counter() - began)
                ranks[mode].append(_rank(hits, question))
    kinds = sorted({q.kind for q in questions})
    for mode in MODES:
        found = ranks[mode]
        report.add(f"{mode}: hit@1", _share(found, 1), "", target="hybrid >= vector"
                   if mode == "hybrid" else "")
        hit5 = report.add(f"{mode}: hit@5", _share(found, 5), "")
        mrr = report.add(f"{mode}: MRR", sum(1 / r for r in found if r) / len(found), "")
        if mode == "hybrid":
            vector = ranks["vector"]
            hit5.baseline, hit5.baseline_name = _share(vector, 5), "vector"
            hit5.target, hit5.met = ">= vector", hit5.value >= hit5.baseline
            mrr.baseline = sum(1 / r for r in vector if r) / len(vector)
            mrr.baseline_name, mrr.target = "vector", ">= vector"
            mrr.met = mrr.value >= mrr.baseline
        report.add(f"{mode}: GET /search p50 (small corpus)",
                   percentile(seconds[mode], 50) * 1000, "ms")
    for kind in kinds:
        picked = [n for n, q in enumerate(questions) if q.kind == kind]
        report.note(f"{kind} ({len(picked)} questions): " + ", ".join(
            f"{mode} hit@5 {_share([ranks[mode][n] for n in picked], 5):.2f}"
            f" MRR {sum(1 / r for n in picked if (r := ranks[mode][n])) / len(picked):.2f}"
            for mode in MODES))
    report.note(f"corpus: {len(files)} PDFs ({manuals} manuals of {pages} pages and the 4 "
                f"samples), {len(questions)} questions; ingest {ingest_seconds:.1f} s")


async def speed(report: Report, stack: Stack, small: int, big: int, queries: int) -> None:
    assert stack.pool is not None
    pool = stack.pool
    per_document = 500
    tenants = {"small-5": await corpus.insert(pool, "small-5", documents=1, chunks_per_document=5,
                                              dim=LOCAL_DIM, model=SYNTHETIC_MODEL, seed=1,
                                              words_per_chunk=60)}
    for size in (small, big):
        tenants[f"{size}"] = await corpus.insert(
            pool, f"tenant-{size}", documents=size // per_document,
            chunks_per_document=per_document, dim=LOCAL_DIM, model=SYNTHETIC_MODEL,
            seed=size, words_per_chunk=60, topics=size // CHUNKS_PER_TOPIC)
    started = time.perf_counter()
    # a connection of its own: minutes of index build, past the pool's command timeout
    conn = await asyncpg.connect(stack.postgres.url)
    try:
        await conn.execute("SET maintenance_work_mem = '1GB'")  # the graph built in memory
        # as a worker asks: not made while others hold chunks (autovacuum, after the load)
        while not await documents.ensure_vector_index(conn, SYNTHETIC_MODEL, LOCAL_DIM):
            if time.perf_counter() - started > 300:
                raise RuntimeError("the HNSW index could not be made in 5 minutes")
    finally:
        await conn.close()
    build = time.perf_counter() - started
    await pool.execute("ANALYZE chunks, documents")
    rng = np.random.default_rng(7)
    vocabulary = corpus.vocabulary()
    for name, data in tenants.items():
        vectors = data.queries(rng, queries)
        texts = [corpus.words(rng, vocabulary[50:1000], 2) for _ in range(queries)]
        for mode in ("vector", "hybrid"):
            took, found = [], 0
            for vector, text in zip(vectors, texts):
                query = search.Query(text, 10, mode, [float(x) for x in vector],
                                     SYNTHETIC_MODEL)
                began = time.perf_counter()
                hits = await search.search(pool, data.tenant, query)
                took.append(time.perf_counter() - began)
                if mode == "vector":
                    truth = set(corpus.brute_force(data, vector, 10))
                    found += len(truth & {(h["document_id"], h["idx"]) for h in hits})
            size = len(data.chunk_ids)
            p99 = percentile(took, 99) * 1000
            report.add(f"{mode} search, tenant of {size:,} chunks: p50",
                       percentile(took, 50) * 1000, "ms")
            report.add(f"{mode} search, tenant of {size:,} chunks: p99", p99, "ms",
                       target="< 100 ms" if size == big else "",
                       met=p99 < 100 if size == big else None)
            if mode == "vector":
                recall = found / (min(10, size) * queries)
                report.add(f"vector recall@10 vs brute force, {size:,} chunks", recall, "",
                           target=">= 0.95" if size == big else "",
                           met=recall >= 0.95 if size == big else None)
    total = sum(len(d.chunk_ids) for d in tenants.values())
    report.note(f"synthetic: {total:,} chunks of {LOCAL_DIM} dimensions in one table; HNSW "
                f"(m 16, ef_construction 64) built after the load in {build:.0f} s; topics of "
                f"~{CHUNKS_PER_TOPIC} chunks (the tenant of 5: uniform vectors); {queries} "
                f"queries per tenant and mode, k = 10, timed around store.search (SQL only); "
                f"text queries: 2 made-up words of middling frequency; the exact scan up to "
                f"{search.EXACT_LIMIT:,} chunks in scope, HNSW above")


async def run(report: Report, manuals: int, pages: int, small: int, big: int,
              queries: int) -> None:
    async with Stack() as stack:
        await quality(report, stack, manuals, pages)
        await speed(report, stack, small, big, queries)


async def _search(client: httpx.AsyncClient, text: str, mode: str) -> list[dict[str, Any]]:
    response = await client.get("/search", params={"q": text, "k": 10, "mode": mode})
    response.raise_for_status()
    return list(response.json()["results"])


def _rank(hits: list[dict[str, Any]], question: Question) -> int | None:
    for rank, hit in enumerate(hits, 1):
        if hit["filename"] == question.filename and \
                hit["page_start"] <= question.page <= hit["page_end"]:
            return rank
    return None


def _share(ranks: list[int | None], k: int) -> float:
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def main() -> None:
    cli("bench.retrieval", "18. Retrieval", __doc__, run, manuals=6, pages=30, small=10_000,
        big=200_000, queries=200)


if __name__ == "__main__":
    main()
