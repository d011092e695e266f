"""Choose which refusals of the lexical check the cross-encoder judge may overrule, and its
threshold, from pair sets the judge was not trained on.

    /tmp/torchenv/bin/python bench/judge_train.py --model-dir DIR --holdout cache_heldout10 \\
        --holdout cache_heldout11 --scores /tmp/scores.json
    PYTHONPATH=. .venv/bin/python bench/judge_eval.py /tmp/scores.json

For every held-out pair: its cosine, the lexical check's verdict (`match`) and the reason under
it (`same_question`, which `match` hides as "similarity" below the threshold), and the judge's
score. Prints, per reason, the rewordings and near-misses the check refused and how the judge
scores them; then, for each set of reasons the judge could be allowed to overrule, the highest
near-miss score and the rewordings it would gain at thresholds above it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_bench import setup_django


def rows(scores: dict[str, Any]) -> list[dict[str, Any]]:
    from django.conf import settings

    from llm.cache.lexical.profile import profile
    from llm.cache.lexical.rewrite import normalise
    from llm.cache.lexical.verdict import match, same_question
    from llm.embeddings import embedder

    threshold = settings.CACHE_SEMANTIC_THRESHOLD
    model = embedder()
    out = []
    for name, data in scores.items():
        for kind in ("paraphrases", "near_misses"):
            pairs = data[kind]
            a = model.embed([normalise(p["a"]) for p in pairs])
            b = model.embed([normalise(p["b"]) for p in pairs])
            for pair, cosine in zip(pairs, (a * b).sum(axis=1), strict=True):
                asked, stored = profile(pair["b"]), profile(pair["a"])
                out.append(
                    {
                        "set": name,
                        "kind": kind,
                        "pair": pair,
                        "cosine": float(cosine),
                        "verdict": match(asked, stored, float(cosine), threshold),
                        "reason": same_question(asked, stored) or "same words",
                        "score": pair["score"],
                    }
                )
    return out


def report(out: list[dict[str, Any]]) -> None:
    refused = [r for r in out if r["verdict"]]
    print(
        f"{len(out)} pairs; refused by the check: "
        f"{sum(r['kind'] == 'paraphrases' for r in refused)} rewordings, "
        f"{sum(r['kind'] == 'near_misses' for r in refused)} near-misses"
    )
    by_reason: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in refused:
        by_reason[r["reason"]].append(r)
    print("\nreason | rewordings refused (score >= .5/.9) | near-misses refused (max score, >= .5)")
    for reason, rs in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        para = [r["score"] for r in rs if r["kind"] == "paraphrases"]
        near = [r["score"] for r in rs if r["kind"] == "near_misses"]
        high = f"{sum(s >= 0.5 for s in para)}/{sum(s >= 0.9 for s in para)}"
        print(
            f"{reason:14} | {len(para):3} ({high}) "
            f"| {len(near):3} (max {max(near, default=0):.3f}, {sum(s >= 0.5 for s in near)})"
        )
    policies = {
        "soft: content+added+question word+same words": {
            "content",
            "added",
            "question word",
            "same words",
        },
        "content+added+same words": {"content", "added", "same words"},
        "content+added": {"content", "added"},
        "content": {"content"},
        "all reasons": set(by_reason),
    }
    for floor in (0.3, 0.5, 0.6, 0.7):
        for label, reasons in policies.items():
            pool = [r for r in refused if r["reason"] in reasons and r["cosine"] >= floor]
            near = sorted((r["score"] for r in pool if r["kind"] == "near_misses"), reverse=True)
            para = [r["score"] for r in pool if r["kind"] == "paraphrases"]
            top = near[0] if near else 0.0
            gains = [
                f"{t}: {sum(s >= t for s in para)} (+{sum(s >= t for s in near)} false)"
                for t in (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
            ]
            print(
                f"\ncosine >= {floor}, {label}: {len(para)} rewordings, {len(near)} near-misses; "
                f"near-miss scores top 5 {[round(s, 3) for s in near[:5]]}; "
                f"rewordings above the top near-miss: {sum(s > top for s in para)}"
            )
            print("   " + "; ".join(gains))
    print("\nnear-misses refused with score >= 0.5:")
    for r in sorted(refused, key=lambda r: -r["score"]):
        if r["kind"] == "near_misses" and r["score"] >= 0.5:
            p = r["pair"]
            print(f"  {r['score']:.3f} {r['cosine']:.2f} {r['reason']:10} {p['a']!r} / {p['b']!r}")


def main() -> None:
    scores = json.loads(Path(sys.argv[1]).read_text())
    with tempfile.TemporaryDirectory() as directory:
        setup_django(str(Path(directory) / "bench.sqlite3"))
        out = rows(scores)
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
    report(out)


if __name__ == "__main__":
    main()
