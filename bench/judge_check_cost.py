"""CPU time of the lexical check per pair, this tree against an earlier commit's, interleaved.

    PYTHONPATH=. .venv/bin/python bench/judge_check_cost.py --base d6fdb69 --rounds 3

Every pair of every tuning set: both questions profiled from cold (profile caches cleared), then
`match`, on this tree's check and the base commit's (bench/cache_bench.py's baseline_guard),
alternating pair by pair; thread CPU time, so other jobs on the machine count less.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_bench import DATA, PAIR_SETS, baseline_guard, pct, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="d6fdb69")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        setup_django(str(Path(directory) / "bench.sqlite3"))
        from django.conf import settings

        from llm.cache.lexical import profile as profile_module
        from llm.cache.lexical.verdict import match

        base = baseline_guard(args.base)
        threshold = settings.CACHE_SEMANTIC_THRESHOLD
        pairs = []
        for _, name, key in PAIR_SETS:
            data = json.loads((DATA / name).read_text())
            block = data[key] if key else data
            pairs += [
                (p["a"], p["b"]) for kind in ("paraphrases", "near_misses") for p in block[kind]
            ]

        def clear() -> None:
            for module in (profile_module, sys.modules[base.profile.__module__]):
                for value in vars(module).values():
                    if hasattr(value, "cache_clear"):
                        value.cache_clear()

        for round_ in range(args.rounds):
            times: dict[str, list[float]] = {"branch": [], "base": []}
            for a, b in pairs:
                order = ("branch", "base") if round_ % 2 == 0 else ("base", "branch")
                for side in order:
                    clear()
                    start = time.thread_time()
                    if side == "branch":
                        match(profile_module.profile(b), profile_module.profile(a), 0.9, threshold)
                    else:
                        base.hit(a, b, 0.9, threshold)
                    times[side].append((time.thread_time() - start) * 1000)
            print(
                f"round {round_ + 1}: {len(pairs)} pairs; "
                + "; ".join(
                    f"{side} p50 {statistics.median(v):.2f} ms p95 {pct(v, 0.95):.2f} ms "
                    f"mean {statistics.mean(v):.2f} ms"
                    for side, v in times.items()
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
