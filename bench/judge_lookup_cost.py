"""What the judge's second look adds to the semantic step of a lookup: the tuning sets' second
questions searched against an index of every first question (llm/cache/semantic.py's
ScopeIndex.search, embedding included), the check alone and with the judge, interleaved question
by question in one process (the question's profile made before either, as the index caches
it); p50 / p95, how many searches reached the judge, and the resident
memory the judge adds.

    PYTHONPATH=. .venv/bin/python bench/judge_lookup_cost.py [--every 4] [--threshold 0.962]

Without the database, Redis and the exact layer (bench/cache_bench.py --lookup-only runs the
whole lookup): this is the part the judge changes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_bench import pair_questions, pct, rss_mb, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=int, default=4, help="every n-th second question")
    parser.add_argument("--threshold", type=float, default=0.962)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        setup_django(str(Path(directory) / "bench.sqlite3"))
        import numpy as np
        from django.conf import settings

        from llm.cache.judge import judge
        from llm.cache.lexical.profile import profile
        from llm.cache.lexical.rewrite import normalise
        from llm.cache.semantic import ScopeIndex
        from llm.embeddings import embedder

        stored, asked = pair_questions()
        asked = asked[:: args.every]
        model = embedder()
        vectors = np.vstack(
            [
                model.embed([normalise(q) for q in stored[i : i + 64]])
                for i in range(0, len(stored), 64)
            ]
        )
        index = ScopeIndex(
            version="bench",
            ids=np.arange(len(stored), dtype=np.int64),
            faq=np.zeros(len(stored), dtype=bool),
            vectors=vectors,
            questions=stored,
        )
        threshold = settings.CACHE_SEMANTIC_THRESHOLD
        before = rss_mb()
        judge().scores([("warm up", "the judge")])
        added = rss_mb() - before
        times: dict[str, list[float]] = {"check alone": [], "check + judge": []}
        found = {mode: 0 for mode in times}
        judged = 0
        calls = judge().scores
        count = {"n": 0}

        def counted(pairs: list[tuple[str, str]]) -> list[float]:
            count["n"] += 1
            return calls(pairs)

        judge().scores = counted  # type: ignore[method-assign]
        for question in asked:
            profile(question)  # cached per question: neither mode pays it
            for mode, judge_threshold in (("check alone", None), ("check + judge", args.threshold)):
                start = time.perf_counter()
                vector = model.embed([normalise(question)])[0]
                hit = index.search(
                    vector,
                    profile(question),
                    threshold=threshold,
                    faq_only=False,
                    judge_threshold=judge_threshold,
                )
                times[mode].append((time.perf_counter() - start) * 1000)
                found[mode] += hit is not None
        judged = count["n"]
    print(
        f"{len(asked)} searches against {len(stored)} stored; judge loaded: +{added:.0f} MB "
        f"resident; {judged} searches reached the judge"
    )
    print("| search | p50 | p95 | hits |\n| --- | ---: | ---: | ---: |")
    for mode, values in times.items():
        print(
            f"| {mode} | {statistics.median(values):.2f} ms | {pct(values, 0.95):.2f} ms | "
            f"{found[mode]} |"
        )


if __name__ == "__main__":
    main()
