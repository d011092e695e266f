"""Resident memory of the reply cache's lookup path over many lookups, in one process.

    .venv/bin/python bench/cache_lookup_memory.py [LOOKUPS] [EVERY] [--distinct]
    .venv/bin/python bench/cache_lookup_memory.py --embed N BATCH   # warming's embedding alone

The stored and asked questions of bench/cache_bench.py's `bench_lookup` (every first question
of the pair sets warmed as FAQ entries of one organisation), the judge on as by default; the
same calls (lookup_start, lookup_stored, lookup_similar); RSS and max RSS printed after warming
and every EVERY lookups. --distinct appends the lookup's number to each question, so no two
are alike (the per-process caches keyed by question text see only new keys). --embed: max RSS
before and after embedding the first N stored questions BATCH at a time (cache_warm's work; run
it in a fresh process per figure, max RSS never goes down).
"""

from __future__ import annotations

import asyncio
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_bench import pair_questions, rss_mb, setup_django


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def embed_peak(count: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        setup_django(str(Path(directory) / "bench.sqlite3"))
        from llm.cache.lexical.rewrite import normalise
        from llm.embeddings import embedder

        texts = [normalise(q) for q in pair_questions()[0][:count]]
        model = embedder()
        model.embed(["warm up"])
        before = max_rss_mb()
        for at in range(0, len(texts), batch):
            model.embed(texts[at : at + batch])
        print(
            f"{len(texts)} questions, {batch} a pass: max RSS {before:.0f} -> {max_rss_mb():.0f} MB"
        )


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--embed" in sys.argv:
        embed_peak(int(args[0]), int(args[1]))
        return
    lookups = int(args[0]) if args else 10_000
    every = int(args[1]) if len(args) > 1 else 1_000
    distinct = "--distinct" in sys.argv
    with tempfile.TemporaryDirectory() as directory:
        setup_django(str(Path(directory) / "bench.sqlite3"))
        from asgiref.sync import sync_to_async
        from django.conf import settings
        from langchain_core.messages import HumanMessage, SystemMessage

        from accounts.services import account_create, organisation_create
        from llm.cache import lookup_similar, lookup_start, lookup_stored
        from llm.cache.warm import FaqItem, cache_warm
        from llm.catalog import default_alias

        stored, asked = pair_questions()
        user = account_create(username="benchmemory", password="bench pass phrase")
        organisation = organisation_create(name="Bench memory", admin=user)
        items = [FaqItem(question=q, answer=f"answer {i}") for i, q in enumerate(stored)]
        cache_warm(organisation=organisation, items=items)
        alias = default_alias()

        async def one(question: str) -> None:
            messages = [SystemMessage(settings.LLM_SYSTEM_PROMPT), HumanMessage(question)]

            def prepare() -> object:
                lookup = lookup_start(
                    alias=alias,
                    messages=messages,
                    organisation_id=organisation.pk,
                    owner_id=user.pk,
                )
                lookup_stored(lookup)
                return lookup

            await lookup_similar(await sync_to_async(prepare)())  # type: ignore[arg-type]

        async def run() -> None:
            await one("warm up")
            gc.collect()
            print(
                f"{len(stored)} stored, {len(asked)} asked; after warming: RSS "
                f"{rss_mb():.0f} MB, max RSS {max_rss_mb():.0f} MB",
                flush=True,
            )
            began = time.perf_counter()
            for i in range(1, lookups + 1):
                question = asked[i % len(asked)]
                await one(f"{question} {i}" if distinct else question)
                if i % every == 0:
                    gc.collect()
                    print(
                        f"{i} lookups: RSS {rss_mb():.0f} MB, max RSS {max_rss_mb():.0f} MB, "
                        f"{time.perf_counter() - began:.0f} s",
                        flush=True,
                    )

        asyncio.run(run())


if __name__ == "__main__":
    main()
