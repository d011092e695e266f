"""The judge on pair sets it was not trained on: bench/data/training/ (written after the shipped
judge was trained), through the same rules as the index (`match`, then `judge_may_overrule`),
rewordings and near-misses hit per judge threshold, and the judged near-misses scored highest.

    PYTHONPATH=. .venv/bin/python bench/judge_unseen.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_bench import DATA, setup_django

THRESHOLDS = (0.99, 0.993, 0.995, 0.996, 0.997, 0.998)


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        setup_django(str(Path(directory) / "bench.sqlite3"))
        from django.conf import settings

        from llm.cache.judge import judge
        from llm.cache.lexical.profile import profile
        from llm.cache.lexical.rewrite import normalise
        from llm.cache.lexical.verdict import judge_may_overrule, match
        from llm.embeddings import embedder

        threshold = settings.CACHE_SEMANTIC_THRESHOLD
        rows: list[dict[str, Any]] = []
        for path in sorted((DATA / "training").glob("*.json")):
            data = json.loads(path.read_text())
            for kind in ("paraphrases", "near_misses"):
                pairs = data[kind]
                a = embedder().embed([normalise(p["a"]) for p in pairs])
                b = embedder().embed([normalise(p["b"]) for p in pairs])
                for pair, similarity in zip(pairs, (a * b).sum(axis=1), strict=True):
                    cosine = float(similarity)
                    asked, stored = profile(pair["b"]), profile(pair["a"])
                    reason = match(asked, stored, cosine, threshold)
                    soft = bool(reason) and judge_may_overrule(asked, stored, cosine)
                    rows.append(
                        {
                            "kind": kind,
                            "pair": pair,
                            "cosine": cosine,
                            "reason": reason,
                            "soft": soft,
                            "score": 0.0,
                        }
                    )
        judged = [r for r in rows if r["soft"]]
        for start in range(0, len(judged), 32):
            chunk = judged[start : start + 32]
            scores = judge().scores([(r["pair"]["a"], r["pair"]["b"]) for r in chunk])
            for row, score in zip(chunk, scores, strict=True):
                row["score"] = score
    rewordings = [r for r in rows if r["kind"] == "paraphrases"]
    near = [r for r in rows if r["kind"] == "near_misses"]

    def hits(group: list[dict[str, Any]], t: float | None) -> int:
        return sum(
            not r["reason"] or (t is not None and r["soft"] and r["score"] >= t) for r in group
        )

    print(
        f"check alone: {hits(rewordings, None)}/{len(rewordings)} rewordings, "
        f"{hits(near, None)}/{len(near)} near-misses"
    )
    for t in THRESHOLDS:
        print(f"judge at {t}: {hits(rewordings, t)} rewordings, {hits(near, t)} near-misses")
    print("judged near-misses scored highest:")
    for r in sorted((r for r in near if r["soft"]), key=lambda r: -r["score"])[:8]:
        print(
            f"  {r['score']:.4f} (cosine {r['cosine']:.2f}, {r['reason']}) "
            f"{r['pair']['a']!r} / {r['pair']['b']!r}"
        )


if __name__ == "__main__":
    main()
