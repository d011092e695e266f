"""Retrieval benchmark for documents (chat/documents/, docs/documents.md).

1. Quality: the generated handbooks (bench/retrieval_corpus.py: 12 organisations x 4 PDF
   pages, 96 questions whose answer sentence is known) are uploaded into one collection and
   ingested by the real path (pypdf, splitter, MiniLM, the vector store). For each question:
   is a chunk holding the answer sentence among the top 5 (recall@5), and at which rank
   (MRR over the top 5) — hybrid score (DOCUMENTS_LEXICAL_WEIGHT) against vector similarity
   alone (weight 0), measured in the same run.
2. Ingestion: pages per second, upload (extraction) and ingestion (split, embed, store).
3. Query latency: the in-memory search over 1k / 10k / 100k chunks (synthetic unit vectors,
   384 wide) against embedding the question (the baseline every query pays), medians; and a
   whole retrieval on the real corpus (embed, search, fetch, re-rank).

Run: .venv/bin/python bench/retrieval_bench.py [--write]   (--write updates docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- retrieval-bench:start -->", "<!-- retrieval-bench:end -->"
COMMAND = ".venv/bin/python bench/retrieval_bench.py --write"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def setup_django(db_path: str) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "GENERATION_BACKEND"):
        os.environ.pop(name, None)
    os.environ["SQLITE_PATH"] = db_path
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    os.environ["LOG_LEVEL"] = "ERROR"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import chat.documents.services

    # Ingestion is run (and timed) here, not in the background thread.
    chat.documents.services.ingestion_dispatch = lambda *args, **kwargs: None  # type: ignore[assignment]


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def quality(collection_scope: str, questions: list, weight: float) -> tuple[float, float]:
    from django.conf import settings

    from chat.documents.retrieval import passages_retrieve

    settings.DOCUMENTS_LEXICAL_WEIGHT = weight
    found, reciprocal = 0, 0.0
    for q in questions:
        passages = passages_retrieve(
            scopes=[collection_scope], question=q.text, k=5, budget_tokens=10**6
        )
        answer = squash(q.answer)
        for rank, p in enumerate(passages, start=1):
            if answer in squash(p.text):
                found += 1
                reciprocal += 1 / rank
                break
    return found / len(questions), reciprocal / len(questions)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="parley-retrieval-")
    setup_django(str(Path(tmp) / "bench.sqlite3"))

    from django.conf import settings
    from retrieval_corpus import corpus

    from accounts.services import account_create, organisation_create
    from chat.documents import services
    from chat.documents.ingestion import document_ingest
    from chat.documents.retrieval import passages_retrieve
    from chat.tests.documents_fixtures import pdf_bytes
    from llm.embeddings import embed_one, embedder
    from llm.vectors.numpy_store import ScopeMatrix

    load = os.getloadavg()[0]
    handbooks, questions = corpus()
    user = account_create(username="bench", password="bench-password-1")
    organisation = organisation_create(name="Bench", admin=user)
    collection = services.collection_create(organisation=organisation, name="Handbooks", by=user)
    embedder()  # loaded before timing
    files = [(h.name, pdf_bytes(h.pages)) for h in handbooks]
    pages = sum(len(h.pages) for h in handbooks)

    started = time.perf_counter()
    documents = [
        services.document_upload(by=user, name=name, data=data, collection=collection).document
        for name, data in files
    ]
    uploaded = time.perf_counter()
    for document in documents:
        assert document_ingest(document_id=document.pk) == "ready"
    ingested = time.perf_counter()
    chunks = sum(d.chunks.count() for d in documents)
    upload_s, ingest_s = uploaded - started, ingested - uploaded

    default_weight = settings.DOCUMENTS_LEXICAL_WEIGHT
    hybrid = quality(collection.scope, questions, default_weight)
    vector_only = quality(collection.scope, questions, 0.0)
    settings.DOCUMENTS_LEXICAL_WEIGHT = default_weight
    if os.environ.get("RETRIEVAL_WEIGHTS"):  # tuning: RETRIEVAL_WEIGHTS=0.2,0.4,0.6
        for w in os.environ["RETRIEVAL_WEIGHTS"].split(","):
            print("weight", w, quality(collection.scope, questions, float(w)))
        settings.DOCUMENTS_LEXICAL_WEIGHT = default_weight

    # Latency: the search alone at three sizes, against embedding the question.
    rng = np.random.default_rng(0)
    question = questions[0].text
    embed_samples = []
    for _ in range(30):
        t = time.perf_counter()
        embed_one(question)
        embed_samples.append(time.perf_counter() - t)
    embed_ms = median_ms(embed_samples)
    query = rng.normal(size=384).astype(np.float32)
    query /= np.linalg.norm(query)
    sizes = []
    for n in (1_000, 10_000, 100_000):
        vectors = rng.normal(size=(n, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        matrix = ScopeMatrix.of(range(n), vectors)
        matrix.top(query, 20)
        samples = []
        for _ in range(30 if n < 100_000 else 15):
            t = time.perf_counter()
            matrix.top(query, 20)
            samples.append(time.perf_counter() - t)
        sizes.append((n, median_ms(samples)))
        del vectors, matrix
    whole = []
    for q in questions[:40]:
        t = time.perf_counter()
        passages_retrieve(scopes=[collection.scope], question=q.text, k=5, budget_tokens=1500)
        whole.append(time.perf_counter() - t)

    lines = [
        f"Command: `{COMMAND}`. Machine: 2 cores, shared (load average {load:.1f} at the start: "
        "times are upper bounds). Design: docs/documents.md.",
        "",
        f"Corpus (bench/retrieval_corpus.py, generated): {len(handbooks)} handbooks, {pages} PDF "
        f"pages, {chunks} chunks ({settings.DOCUMENTS_CHUNK_CHARS} characters, overlap "
        f"{settings.DOCUMENTS_CHUNK_OVERLAP}); {len(questions)} questions worded unlike their "
        "answer, each about one of 12 organisations whose handbooks state the same kinds of fact.",
        "",
        "| retrieval | recall@5 | MRR (top 5) |",
        "| --- | ---: | ---: |",
        f"| hybrid (vector + {default_weight:g} lexical), the default "
        f"| {hybrid[0]:.2f} | {hybrid[1]:.2f} |",
        f"| vector similarity alone | {vector_only[0]:.2f} | {vector_only[1]:.2f} |",
        "",
        f"Ingestion: {pages / (upload_s + ingest_s):.1f} pages/s in all "
        f"({pages / upload_s:.0f} pages/s checking and extracting at upload, "
        f"{pages / ingest_s:.1f} pages/s splitting, embedding and storing; "
        f"{chunks / ingest_s:.0f} chunks/s), one core.",
        "",
        "| chunks in scope | search (top 20), median | vs embedding the question |",
        "| ---: | ---: | ---: |",
        *(f"| {n:,} | {ms:.2f} ms | {ms / embed_ms:.2f}x |" for n, ms in sizes),
        "",
        f"Embedding the question (the baseline): {embed_ms:.1f} ms median. A whole retrieval "
        f"on the corpus above (embed, search, fetch chunks, re-rank): "
        f"{median_ms(whole):.1f} ms median over 40 questions.",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        text = DOC.read_text()
        block = f"{START}\n{report}\n{END}"
        if START in text:
            text = re.sub(re.escape(START) + r".*?" + re.escape(END), block, text, flags=re.S)
        else:
            text = (
                text.rstrip()
                + "\n\n## Documents: retrieval quality, ingestion, query latency (issue 17)\n\n"
                + block
                + "\n"
            )
        DOC.write_text(text)


if __name__ == "__main__":
    main()
