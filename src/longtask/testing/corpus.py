"""Large synthetic corpora written straight into the tables, for search tests and benchmarks:
indexed documents whose chunks carry unit vectors from a seeded generator, without parsing or
embedding anything. The rows are the ones ingest writes; only the way there is shorter.

The vectors are either uniform on the sphere or grouped by topic. Uniform 384-dimension vectors
have no structure at all: every pair is about equally far apart, so "the 10 nearest" are barely
nearer than the rest, and no approximate index can find them (HNSW's recall@10 on 200,000 of them
was 0.07). Embeddings of real text are not like that: they lie near a few low-dimensional
surfaces. all-MiniLM-L6-v2 on 722 docstrings of Python's standard library (measured once, for
these constants): mean similarity to the nearest other text 0.68, to the 10th nearest 0.45, local
intrinsic dimension (MLE, 20 neighbours) 7.0. Topic vectors here: a topic's direction, plus a
point of a random `TOPIC_RANK`-dimension subspace of its own (length `TOPIC_SPREAD`), plus
isotropic noise (`NOISE`); at 722 points in 7 topics: 0.62, 0.47, 7.0.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import asyncpg
import numpy as np

BATCH = 5000
TOPIC_RANK, TOPIC_SPREAD, NOISE = 24, 1.6, 0.4  # see the module's docstring


@dataclass(frozen=True)
class Synthetic:
    tenant: str
    document_ids: list[str]
    chunk_ids: np.ndarray  # chunks.id of each row of `vectors`
    vectors: np.ndarray  # unit vectors, one row per chunk
    documents_of: np.ndarray  # the index in `document_ids` of each chunk's document
    topics: Topics | None = None  # the topics, if the vectors have them

    def queries(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n query vectors drawn as the chunks were: each near one of the topics, if any."""
        if self.topics is None:
            return unit_vectors(rng, n, self.vectors.shape[1])
        return self.topics.vectors(rng, n)


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return _normalized(vectors)


@dataclass(frozen=True)
class Topics:
    """Random directions, each with a random low-dimensional subspace around it."""

    directions: np.ndarray  # (topics, dim), unit vectors
    bases: np.ndarray  # (topics, dim, TOPIC_RANK): each topic's subspace, orthonormal columns

    @classmethod
    def draw(cls, rng: np.random.Generator, topics: int, dim: int) -> Topics:
        bases = np.linalg.qr(rng.standard_normal((topics, dim, TOPIC_RANK)))[0]
        return cls(unit_vectors(rng, topics, dim), bases.astype(np.float32))

    def vectors(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n unit vectors, each near a topic drawn at random (see the module's docstring)."""
        dim = self.directions.shape[1]
        which = rng.integers(0, len(self.directions), n)
        within = rng.standard_normal((n, TOPIC_RANK)).astype(np.float32) * (
            TOPIC_SPREAD / np.sqrt(TOPIC_RANK))
        vectors = self.directions[which] + rng.standard_normal((n, dim)).astype(np.float32) * (
            NOISE / np.sqrt(dim))
        order = np.argsort(which, kind="stable")  # each topic's rows through its own basis
        bounds = np.searchsorted(which[order], np.arange(len(self.directions) + 1))
        for topic, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            rows = order[start:end]
            vectors[rows] += within[rows] @ self.bases[topic].T
        return _normalized(vectors)


def _normalized(vectors: np.ndarray) -> np.ndarray:
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
    return " ".join(rng.choice(vocabulary, n, p=_zipf(len(vocabulary))))


def _zipf(n: int) -> np.ndarray:
    weights = 1 / np.arange(1, n + 1)
    return weights / weights.sum()  # type: ignore[no-any-return]


async def insert(pool: asyncpg.Pool, tenant: str, *, documents: int, chunks_per_document: int,
                 dim: int, model: str, seed: int = 0, words_per_chunk: int = 0,
                 topics: int = 0) -> Synthetic:
    """`documents` indexed documents of `chunks_per_document` chunks each, for `tenant`; each
    chunk's text `words_per_chunk` words drawn from `vocabulary()`, or `chunk N` if 0; its
    vector uniform on the sphere, or near one of `topics` random topics if `topics`."""
    rng = np.random.default_rng(seed)
    drawn = Topics.draw(rng, topics, dim) if topics else None
    vectors = (unit_vectors(rng, documents * chunks_per_document, dim) if drawn is None
               else drawn.vectors(rng, documents * chunks_per_document))
    if words_per_chunk:  # every chunk's words in one draw: one call per chunk took minutes
        made = np.array(vocabulary())
        drawn_words = made[rng.choice(len(made), (len(vectors), words_per_chunk),
                                      p=_zipf(len(made)))]
        texts = [" ".join(row) for row in drawn_words]
    else:
        texts = [f"chunk {i}" for i in range(len(vectors))]
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
                     np.arange(len(vectors)) // chunks_per_document, drawn)


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
