"""A small tenant's search, or a document's, returns its true top k beside a large tenant."""

from __future__ import annotations

from typing import Any

import asyncpg
import numpy as np
import pytest

from longtask.store import documents, search
from longtask.testing import corpus

DIM = 32
# a model of each test's own: its HNSW index is made after the bulk insert (fast), where
# inserting into one made before is one walk per row (slow)
MODEL, OTHER_MODEL = "synthetic-32-a", "synthetic-32-b"


async def test_small_tenants_and_documents_get_their_exact_k(pool: asyncpg.Pool) -> None:
    big = await corpus.insert(pool, "tenant-a", documents=100, chunks_per_document=500, dim=DIM,
                              model=MODEL, seed=1)
    small = await corpus.insert(pool, "tenant-b", documents=1, chunks_per_document=5, dim=DIM,
                                model=MODEL, seed=2)
    assert await documents.ensure_vector_index(pool, MODEL, DIM)  # the HNSW index, as ingest
    await pool.execute("ANALYZE chunks")
    for query in corpus.unit_vectors(np.random.default_rng(3), 10, DIM):
        # tenant B: all five of its chunks, nearest first, as a brute-force scan orders them
        hits = await search.search(pool, "tenant-b", _query(query, 5))
        assert _keys(hits) == corpus.brute_force(small, query, 5)

        # one document among tenant A's 50,000 chunks: its own 10 nearest, in order
        hits = await search.search(pool, "tenant-a", _query(query, 10, [big.document_ids[42]]))
        assert _keys(hits) == corpus.brute_force(big, query, 10, big.documents_of == 42)

        # tenant A itself (above the exact limit: HNSW, ef_search raised): k hits, nearest
        # first, mostly the true ones (bench/retrieval.py measures recall over many queries)
        hits = await search.search(pool, "tenant-a", _query(query, 10))
        assert len(hits) == 10
        assert len(set(_keys(hits)) & set(corpus.brute_force(big, query, 10))) >= 7
        similarities = [h["similarity"] for h in hits]
        assert similarities == sorted(similarities, reverse=True)


async def test_a_walk_sized_for_a_small_share_of_the_index(pool: asyncpg.Pool) -> None:
    # tenant C's 2,000 chunks are 4 % of the index: past a low exact limit, the walk gathers
    # enough candidates for C's k (ef_search 500); one that comes back short is made up by the
    # exact scan, so C always gets its k
    await corpus.insert(pool, "tenant-a", documents=48, chunks_per_document=1000, dim=DIM,
                        model=OTHER_MODEL, seed=4)
    c = await corpus.insert(pool, "tenant-c", documents=2, chunks_per_document=1000, dim=DIM,
                            model=OTHER_MODEL, seed=5)
    assert await documents.ensure_vector_index(pool, OTHER_MODEL, DIM)
    await pool.execute("ANALYZE chunks")
    found = 0
    for query in corpus.unit_vectors(np.random.default_rng(6), 10, DIM):
        hits = await search.search(pool, "tenant-c",
                                   _query(query, 10, exact_limit=0, model=OTHER_MODEL))
        assert len(hits) == 10 and {h["document_id"] for h in hits} <= set(c.document_ids)
        found += len(set(_keys(hits)) & set(corpus.brute_force(c, query, 10)))
    assert found >= 90  # recall@10 over the 10 queries


def _query(vector: np.ndarray, k: int, document_ids: list[str] | None = None,
           exact_limit: int = search.EXACT_LIMIT, model: str = MODEL) -> search.Query:
    return search.Query("", k, "vector", [float(x) for x in vector], model, document_ids,
                        exact_limit)


def _keys(hits: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(h["document_id"], h["idx"]) for h in hits]


async def test_each_document_gets_the_language_its_stop_words_say(pool: asyncpg.Pool) -> None:
    german = "Die Anleitung beschreibt die Wartung der Anlage und die Pflege des Gerätes. " * 20
    assert await documents.language_of(pool, german) == "german"
    assert await documents.language_of(pool, "The valve opens when the pressure rises. " * 20) \
        == "english"
    assert await documents.language_of(pool, "東京は日本の首都です。" * 50) == "simple"
    assert await documents.language_of(pool, "12345-AB 0.123mm ±0.01 " * 50) == "simple"


async def test_text_search_ranks_chunks_with_every_word_before_those_with_some(
        pool: asyncpg.Pool) -> None:
    # two statements (every word, then some): the second only when the first is short of k
    await corpus.insert(pool, "tenant-t", documents=1, chunks_per_document=400, dim=DIM,
                        model=MODEL, seed=7, words_per_chunk=12)
    vocabulary = corpus.vocabulary()
    first, second = vocabulary[3], vocabulary[5]  # common: each in a fifth of the chunks or more
    words = {r["idx"]: set(r["text"].split()) for r in await pool.fetch(
        "SELECT idx, text FROM chunks WHERE tenant = 'tenant-t'")}
    every = {idx for idx, w in words.items() if {first, second} <= w}
    some = {idx for idx, w in words.items() if w & {first, second}} - every
    assert every and some

    query = f"{first} {second}"
    hits = await search.search(pool, "tenant-t", search.Query(query, len(words), "text"))
    ranked = [h["idx"] for h in hits]
    assert set(ranked[:len(every)]) == every and set(ranked[len(every):]) == some
    for group in (hits[:len(every)], hits[len(every):]):
        assert [h["score"] for h in group] == sorted((h["score"] for h in group), reverse=True)
    # k within the first group: its best, as the whole ranking has them
    hits = await search.search(pool, "tenant-t", search.Query(query, 3, "text"))
    assert [h["idx"] for h in hits] == ranked[:3]


async def test_a_legs_error_is_raised_as_itself(pool: asyncpg.Pool) -> None:
    # the two legs run in a task group; callers classify errors by type (a lost connection is
    # retried, a bad query is not), so one leg's error must not arrive inside an ExceptionGroup
    with pytest.raises(ValueError, match="needs the query's vector"):
        await search.search(pool, "tenant-b", search.Query("words", 5, "hybrid", None, MODEL))
