"""What the cross-encoder judge (llm/cache/judge.py) costs: load time, resident memory added
beside the embedder, and the time to score the candidates of one lookup (1, 2, 4 or 8 pairs in
one batch, both orders each), p50 / p95 over the tuning sets' pairs.

    PYTHONPATH=. .venv/bin/python bench/judge_cost.py [--rounds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_bench import DATA, pct, rss_mb, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        setup_django(str(Path(directory) / "bench.sqlite3"))
        from llm.cache.judge import JUDGE_DIR, judge
        from llm.embeddings import embedder

        embedder().embed(["warm up"])
        before = rss_mb()
        began = time.perf_counter()
        model = judge()
        loaded = time.perf_counter() - began
        model.scores([("warm up", "warm it up")])
        added = rss_mb() - before
        pairs = []
        for path in sorted((DATA / "tuning").glob("*.json")):
            data = json.loads(path.read_text())
            pairs += [(p["a"], p["b"]) for p in data["paraphrases"] + data["near_misses"]]
        print(
            f"load {loaded:.2f} s; resident +{added:.0f} MB after the first score "
            f"(peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB); "
            f"file {(JUDGE_DIR / 'judge.safetensors').stat().st_size / 1e6:.1f} MB; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        for n in (1, 2, 4, 8):
            times = []
            for r in range(args.rounds):
                batch = pairs[(r * n) % len(pairs) :][:n]
                start = time.perf_counter()
                model.scores(batch)
                times.append((time.perf_counter() - start) * 1000)
            print(
                f"{n} candidate(s) per lookup: p50 {pct(times, 0.5):.1f} ms, "
                f"p95 {pct(times, 0.95):.1f} ms ({args.rounds} lookups)"
            )
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
