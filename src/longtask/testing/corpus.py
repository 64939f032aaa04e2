"""Large synthetic corpora written straight into the tables, for search tests and benchmarks:
indexed documents whose chunks carry random unit vectors (a seeded generator), without parsing
or embedding anything. The rows are the ones ingest writes; only the way there is shorter."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import asyncpg
import numpy as np

BATCH = 5000


@dataclass(frozen=True)
class Synthetic:
    tenant: str
    document_ids: list[str]
    chunk_ids: np.ndarray  # chunks.id of each row of `vectors`
    vectors: np.ndarray  # unit vectors, one row per chunk
    documents_of: np.ndarray  # the index in `document_ids` of each chunk's document


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)  # type: ignore[no-any-return]


def vocabulary(size: int = 5000) -> list[str]:
    """Made-up words (`kalumo`, `tesira` ...), to be drawn by `words`."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    rng = np.random.default_rng(0)
    made: dict[str, None] = {}
    while len(made) < size:
        made["".join(rng.choice(syllables, int(rng.integers(2, 4))))] = None
    return list(made)


def words(rng: np.random.Generator, vocabulary: list[str], n: int) -> str:
    """n words drawn as natural text draws them: the r-th commonest with weight 1/r (Zipf)."""
    weights = 1 / np.arange(1, len(vocabulary) + 1)
    return " ".join(rng.choice(vocabulary, n, p=weights / weights.sum()))


async def insert(pool: asyncpg.Pool, tenant: str, *, documents: int, chunks_per_document: int,
                 dim: int, model: str, seed: int = 0, words_per_chunk: int = 0) -> Synthetic:
    """`documents` indexed documents of `chunks_per_document` chunks each, for `tenant`; each
    chunk's text `words_per_chunk` words drawn from `vocabulary()`, or `chunk N` if 0."""
    rng = np.random.default_rng(seed)
    vectors = unit_vectors(rng, documents * chunks_per_document, dim)
    made = vocabulary() if words_per_chunk else []
    texts = [words(rng, made, words_per_chunk) if words_per_chunk else f"chunk {i}"
             for i in range(len(vectors))]
    document_ids = []
    for n in range(documents):
        generation = str(uuid.uuid4())
        document_ids.append(str(await pool.fetchval(
            "INSERT INTO documents (tenant, sha256, filename, size, status, title, pages,"
            " chunk_count, embedding_model, embedding_dim, generation, indexed_at)"
            " VALUES ($1, $2, $3, 1, 'indexed', $3, 1, $4, $5, $6, $7, now()) RETURNING id",
            tenant, hashlib.sha256(f"{tenant}:{seed}:{n}".encode()).hexdigest(),
            f"synthetic-{n}", chunks_per_document, model, dim, generation)))
    rows = [(document_ids[i // chunks_per_document], i % chunks_per_document)
            for i in range(len(vectors))]
    ids = np.zeros(len(rows), dtype=np.int64)
    position = {document: n for n, document in enumerate(document_ids)}
    for start in range(0, len(rows), BATCH):
        part = rows[start:start + BATCH]
        for r in await pool.fetch(
            "INSERT INTO chunks (document_id, tenant, generation, idx, page_start, page_end,"
            " text, tokens, model, embedding, tsv)"
            " SELECT u.document_id, $1, d.generation, u.idx, 1, 1, u.text, 2, $2,"
            " u.embedding::vector, to_tsvector('simple', u.text)"
            " FROM unnest($3::uuid[], $4::int[], $5::text[], $6::text[])"
            " AS u(document_id, idx, embedding, text)"
            " JOIN documents d ON d.id = u.document_id RETURNING id, document_id, idx",
            tenant, model, [d for d, _ in part], [i for _, i in part],
            # each float32 exactly: pgvector reads the same values back
            ["[" + ",".join(map(repr, v.tolist())) + "]" for v in vectors[start:start + BATCH]],
            texts[start:start + BATCH],
        ):
            ids[position[str(r["document_id"])] * chunks_per_document + r["idx"]] = r["id"]
    return Synthetic(tenant, document_ids, ids, vectors,
                     np.arange(len(vectors)) // chunks_per_document)


def brute_force(corpus: Synthetic, query: np.ndarray, k: int,
                mask: np.ndarray | None = None) -> list[tuple[str, int]]:
    """The k nearest chunks (cosine) among those `mask` keeps, as (document id, idx), ties
    broken by chunk id as the search breaks them."""
    vectors = corpus.vectors
    distances = 1 - (vectors @ query) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    rows = np.arange(len(vectors))
    if mask is not None:
        distances, rows = distances[mask], rows[mask]
    order = rows[np.lexsort((corpus.chunk_ids[rows], distances))[:k]]
    per_document = len(vectors) // len(corpus.document_ids)
    return [(corpus.document_ids[corpus.documents_of[r]], int(r % per_document)) for r in order]
