"""Search a tenant's chunks: by meaning (pgvector), by words (Postgres full text), or both fused
by reciprocal rank fusion (the default).

The vector leg is exact whenever the filter makes it small, and never returns fewer than k when
the filtered set holds k. pgvector 0.6 (what pgserver carries) filters after its HNSW walk, with
no iterative scan, so a walk of `hnsw.ef_search` candidates (40 by default) can hold only a few of
a small tenant's chunks, or none. So:

1. the chunks in scope are counted first, from `documents.chunk_count` (a few rows, not chunks);
2. up to EXACT_LIMIT of them are scanned exactly: every distance computed, sorted, no index
   (bench/retrieval.py: p50 33 ms, p99 54 ms for 10,000 chunks of 384 dimensions, where the
   HNSW walk of a 200,000-chunk tenant takes p99 48 ms at recall@10 0.98; 20,000 scanned
   exactly took p50 61 ms, p99 85 ms);
3. above it, HNSW, with `hnsw.ef_search` raised (SET LOCAL, in the search's own transaction, so
   it holds behind a pooler in transaction mode and leaves no session state) to what the walk
   needs for the scope's share of the index to yield the candidates: candidates x (index rows /
   scope rows) x 2, at least MIN_EF_SEARCH; when that passes pgvector's ceiling of 1,000, or the
   walk still comes back short, the exact scan;
4. the index is partial (`WHERE model = '…'`, one per model), and a generic plan cannot prove a
   `model = $n` parameter matches it, so the HNSW statement names the model as a literal;
5. every statement is planned for its own values (`plan_cache_mode = force_custom_plan`, SET
   LOCAL): asyncpg prepares each statement once per connection, and after five runs Postgres
   may switch to a generic plan, which cannot see that `$3 IS NULL` (no document filter) is
   false. The exact scan of 5,000 chunks of 10 documents then read every document's chunks,
   230 ms instead of 17. Planning each search costs about a millisecond.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from longtask.db import Conn
from longtask.store.documents import sql_literal, vector_literal

T = TypeVar("T")
MODES = ("hybrid", "vector", "text")
EXACT_LIMIT = 10_000  # chunks in scope: at or below, the vector leg scans them all
MIN_EF_SEARCH = 100  # candidates an HNSW walk gathers at least (pgvector's default: 40)
MAX_EF_SEARCH = 1000  # pgvector's ceiling
FUSED = 50  # hits of each leg that hybrid fuses
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al., 2009)
_MAX_DIM = 16000
_JOINED = re.compile(r"\*\*([^\w\s*]{0,2})\*\*")
_HEADLINE = ("StartSel=**, StopSel=**, MaxFragments=2, MinWords=12, MaxWords=30,"
             " FragmentDelimiter=\" … \"")


@dataclass(frozen=True)
class Query:
    text: str
    k: int
    mode: str = "hybrid"
    vector: list[float] | None = None  # the query's embedding (vector and hybrid)
    model: str = ""  # the embedding model of `vector`
    document_ids: list[str] | None = None  # None: all the tenant's documents
    exact_limit: int = EXACT_LIMIT


async def search(pool: asyncpg.Pool, tenant: str, query: Query) -> list[dict[str, Any]]:
    """The k best chunks from the generation each document shows: hybrid's score is the fused
    rank (1 / (60 + rank) per leg), vector's the cosine similarity, text's ts_rank_cd."""
    if query.mode not in MODES:
        raise ValueError(f"unknown search mode {query.mode!r}")
    text = query.text.replace("\x00", "")  # Postgres text holds no NUL; the rest is just text
    wanted = max(query.k, FUSED) if query.mode == "hybrid" else query.k

    async def by_meaning(conn: Conn) -> list[tuple[int, float]]:
        return await _nearest(conn, tenant, query, wanted)

    async def by_words(conn: Conn) -> list[tuple[int, float]]:
        return await _matching(conn, tenant, text, query.document_ids, wanted)

    # Hybrid's two legs at once, each on a connection of its own: its latency is the slower
    # leg's, not their sum. Each read holds one connection and waits for none, so searches
    # cannot deadlock on the pool; the hits are read after the legs, on another. A leg's error
    # is raised as itself, not in an ExceptionGroup: callers tell a lost connection (retried,
    # 503) from a bad query by its type.
    try:
        async with asyncio.TaskGroup() as legs:
            meaning = legs.create_task(_read(pool, by_meaning)) if query.mode != "text" else None
            words = legs.create_task(_read(pool, by_words)) if query.mode != "vector" else None
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    nearest = meaning.result() if meaning else []
    matching = words.result() if words else []
    ranked = _ranked(query.mode, nearest, matching)[:query.k]
    rows = await pool.fetch(_HITS, text, tenant, [chunk for chunk, _ in ranked])
    by_id = {r["id"]: r for r in rows}
    similarity = {chunk: 1 - distance for chunk, distance in nearest}
    vector_rank = {chunk: n for n, (chunk, _) in enumerate(nearest, 1)}
    text_rank = {chunk: n for n, (chunk, _) in enumerate(matching, 1)}
    return [_hit(by_id[chunk], score, similarity.get(chunk), vector_rank.get(chunk),
                 text_rank.get(chunk)) for chunk, score in ranked if chunk in by_id]


async def _read(pool: asyncpg.Pool, read: Callable[[Conn], Awaitable[T]]) -> T:
    """`read(conn)` in a read-only transaction of its own, each statement planned for its own
    values (step 5 of the module's docstring)."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        return await read(conn)


def _ranked(mode: str, nearest: list[tuple[int, float]],
            matching: list[tuple[int, float]]) -> list[tuple[int, float]]:
    if mode == "vector":
        return [(chunk, 1 - distance) for chunk, distance in nearest]
    if mode == "text":
        return matching
    fused: dict[int, float] = {}
    for hits in (nearest, matching):
        for rank, (chunk, _) in enumerate(hits, 1):
            fused[chunk] = fused.get(chunk, 0.0) + 1 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


async def _nearest(conn: Conn, tenant: str, query: Query,
                   n: int) -> list[tuple[int, float]]:
    """The n chunks nearest the query vector (chunk id, cosine distance), exactly when the
    scope is small or the walk comes back short (see the module's docstring)."""
    if query.vector is None:
        raise ValueError("a vector search needs the query's vector")
    dim = len(query.vector)
    if not 0 < dim <= _MAX_DIM:
        raise ValueError(f"embedding dimension {dim} is out of range")
    args = (vector_literal(query.vector), tenant, query.document_ids, n)
    scope = int(await conn.fetchval(_SCOPE, tenant, query.model, query.document_ids))
    if scope == 0:
        return []
    if scope > query.exact_limit:
        rows = await conn.fetchval(_INDEX_ROWS) or scope
        ef = max(MIN_EF_SEARCH, math.ceil(n * max(1.0, rows / scope) * 2))
        if ef <= MAX_EF_SEARCH:
            await conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
            found = await conn.fetch(_walk(dim, query.model), *args)
            if len(found) >= min(n, scope):
                return [(r["id"], r["distance"]) for r in found]
    found = await conn.fetch(_exact(dim), *args, query.model)
    return [(r["id"], r["distance"]) for r in found]


async def _matching(conn: Conn, tenant: str, text: str, document_ids: list[str] | None,
                    n: int) -> list[tuple[int, float]]:
    """The n chunks whose words best match the query (chunk id, ts_rank_cd): those with all of
    them (as the query says) first, then those with some, each group by cover density. The
    groups are two statements: a common word is in tens of thousands of chunks, all of them
    ranked to find the best of the second group, and a query with many words rarely needs it."""
    terms = await conn.fetchrow(_TERMS, text, tenant)
    if terms is None or not terms["words"]:
        return []  # no documents, or no words (only stop words, punctuation)
    args = (terms["query"], terms["words"], tenant, document_ids)
    rows = await conn.fetch(_TEXT_EVERY, *args, n)
    if len(rows) < n:
        rows += await conn.fetch(_TEXT_SOME, *args, n - len(rows))
    return [(r["id"], r["rank"]) for r in rows]


def _hit(row: asyncpg.Record, score: float, similarity: float | None, vector_rank: int | None,
         text_rank: int | None) -> dict[str, Any]:
    # one highlight for a term the parser splits: **QX****-7731**-**A** -> **QX-7731-A**
    snippet = _JOINED.sub(r"\1", row["snippet"] or "")
    return {"document_id": str(row["document_id"]), "filename": row["filename"],
            "title": row["title"], "idx": row["idx"], "page_start": row["page_start"],
            "page_end": row["page_end"], "text": row["text"], "snippet": snippet,
            "score": round(score, 6),
            "similarity": None if similarity is None else round(similarity, 4),
            "vector_rank": vector_rank, "text_rank": text_rank}


# the chunks in scope, from the documents' counts of their published generation
_SCOPE = """
SELECT coalesce(sum(chunk_count), 0) FROM documents
WHERE tenant = $1 AND embedding_model = $2 AND generation IS NOT NULL
  AND ($3::uuid[] IS NULL OR id = ANY($3))
"""

# the planner's estimate of the rows under every model's index: a ceiling for the ones under
# this model's (enough for sizing the walk, and read from the catalog, not counted)
_INDEX_ROWS = "SELECT reltuples::bigint FROM pg_class WHERE oid = 'chunks'::regclass"


def _in_scope(tenant: str, document_ids: str) -> str:
    """The chunks of a tenant (parameter `tenant`), of some of its documents or all (parameter
    `document_ids`, NULL: all), of the generation their document shows. Generations are unique,
    so that is one hashed lookup per chunk: as a join on documents, the planner expected one
    chunk per document and generation, and read every document's chunks, every tenant's, to
    find a 10,000-chunk tenant's (220 ms instead of 30)."""
    return (f"{_chosen(tenant, document_ids)} AND c.generation IN (SELECT generation"
            f" FROM documents WHERE tenant = {tenant} AND generation IS NOT NULL)")


def _chosen(tenant: str, document_ids: str) -> str:
    """The chunks of a tenant, of some of its documents or all, whatever their generation."""
    return (f"c.tenant = {tenant} AND ({document_ids}::uuid[] IS NULL"
            f" OR c.document_id = ANY({document_ids}))")


def _exact(dim: int) -> str:
    # MATERIALIZED: every distance computed, then sorted; no index can serve this ORDER BY
    # the query's vector parsed once (an InitPlan) whatever the plan: in a generic plan,
    # `$1::text::vector` parsed its 384 numbers again for every row, 50 µs each
    return (f"WITH scored AS MATERIALIZED (SELECT c.id,"
            f" c.embedding::vector({dim}) <=> (SELECT $1::text::vector({dim})) AS distance"
            f" FROM chunks c WHERE {_in_scope('$2', '$3')} AND c.model = $5)"
            f" SELECT id, distance FROM scored ORDER BY distance, id LIMIT $4")


def _walk(dim: int, model: str) -> str:
    # The walk reads chunks alone, and the generations are checked after it: with documents
    # joined in, the planner misjudged the join on generation (hundreds of rows expected, every
    # chunk of the tenant found) and read each document's chunks through the B-tree and sorted
    # them all, 4.5 s at 200,000 chunks. A reindex's unpublished chunks may take places in the
    # walk, so it gathers twice what is asked.
    distance = f"c.embedding::vector({dim}) <=> $1::text::vector({dim})"
    return (f"WITH walk AS MATERIALIZED (SELECT c.id, c.document_id, c.generation,"
            f" {distance} AS distance FROM chunks c WHERE {_chosen('$2', '$3')}"
            f" AND c.model = {sql_literal(model)} ORDER BY {distance} LIMIT 2 * $4)"
            f" SELECT w.id, w.distance FROM walk w JOIN documents d ON d.id = w.document_id"
            f" AND d.generation = w.generation ORDER BY w.distance, w.id LIMIT $4")


# The query ($1) parsed in each language the tenant's ($2) documents are in, each parse ORed
# into one tsquery that the GIN index can serve (NULL for a tenant without documents): `query` as
# written (every word, "phrases", -not), and `words`, any of its words. Parsed first, on its own,
# so that the statements below get them as values the planner can look up in the statistics of
# the tsvectors: inside each statement (a CTE), the planner guessed, and read all of a 200,000
# chunk tenant's rows for 4,000 matches (280 ms).
_TERMS = """
SELECT longtask_tsquery_or(websearch_to_tsquery(l.language, $1)) AS query,
       longtask_tsquery_or(replace(plainto_tsquery(l.language, $1)::text, ' & ', ' | ')::tsquery)
       AS words
FROM (SELECT DISTINCT language FROM documents WHERE tenant = $2) l
"""


def _text(matches: str) -> str:
    # ranked by cover density over any of the words: a natural question's words are rarely all
    # in the passage that answers it
    return ("SELECT c.id, ts_rank_cd(c.tsv, $2::tsquery) AS rank FROM chunks c"
            f" WHERE {matches} AND {_in_scope('$3', '$4')} ORDER BY rank DESC, c.id LIMIT $5")


_TEXT_EVERY = _text("c.tsv @@ $1::tsquery AND c.tsv @@ $2::tsquery")
_TEXT_SOME = _text("c.tsv @@ $2::tsquery AND NOT coalesce(c.tsv @@ $1::tsquery, false)")

# around the whole query where the chunk has it, else around any of its words
_HITS = (f"WITH q AS ({_TERMS}) SELECT c.id, c.document_id, d.filename, d.title, c.idx,"
         " c.page_start, c.page_end, c.text, ts_headline(c.language, c.text, CASE WHEN"
         " c.tsv @@ q.query THEN q.query ELSE coalesce(q.words, ''::tsquery) END,"
         f" '{_HEADLINE}') AS snippet FROM chunks c JOIN documents d ON d.id = c.document_id"
         " CROSS JOIN q WHERE c.id = ANY($3::bigint[]) AND c.tenant = $2")
