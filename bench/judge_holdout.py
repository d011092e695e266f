"""The judge's threshold chosen on some sets and checked on others, with and without the gate on
the kind of answer, from bench/judge_causes.py's rows (re-checked by today's check).

    PYTHONPATH=. .venv/bin/python bench/judge_causes.py --rows rows.json --recheck --out now.json
    python3 bench/judge_holdout.py now.json [--first 10-14] [--second 15-18]
    python3 bench/judge_holdout.py rows.json --scores SCORES.json --first 19-19 --second 20-20

--scores takes bench/judge_train.py's held-out scores (another judge, scored by torch) in place
of the rows' own (bench/judge_threshold.py's `load`). Then each group also chooses the lowest
threshold (in steps of 0.001) at which none of its near-misses is answered, and that threshold
is checked on the other group.

For each threshold: rewordings the judge adds / near-misses it answers on each group of sets;
"none" lets it look at every soft refusal at cosine >= 0.5 (as before session 11), "same kind"
only at those that ask for the same kind of answer (`judge_may_overrule` today).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from judge_threshold import load

THRESHOLDS = (0.90, 0.92, 0.94, 0.95, 0.96, 0.962, 0.965)


def set_number(row: dict[str, Any]) -> int | None:
    parts = row["set"].split()
    return int(parts[1]) if parts[0] == "held-out" and parts[1].isdigit() else None


def ungated(row: dict[str, Any]) -> bool:
    return (
        bool(row["verdict"])
        and row["cosine"] >= 0.5
        and row["reason"] in ("content", "added", "same words")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rows", type=Path)
    parser.add_argument("--first", default="10-14")
    parser.add_argument("--second", default="15-18")
    parser.add_argument("--scores", type=Path)
    parser.add_argument("--thresholds", type=float, nargs="*", default=THRESHOLDS)
    args = parser.parse_args()
    rows = load(args.rows, args.scores)
    groups = {}
    for name in (args.first, args.second):
        low, high = map(int, name.split("-"))
        groups[name] = range(low, high + 1)
    print("| threshold | gate | " + " | ".join(f"sets {g}" for g in groups) + " |")
    print("| ---: | --- |" + " ---: |" * len(groups))
    for threshold in args.thresholds:
        for gate, looked in (("none", ungated), ("same kind", lambda r: r["judgeable"])):
            cells = []
            for sets in groups.values():
                judged = [
                    r
                    for r in rows
                    if set_number(r) in sets and looked(r) and r["score"] >= threshold
                ]
                added = sum(r["kind"] == "paraphrases" for r in judged)
                answered = sum(r["kind"] == "near_misses" for r in judged)
                cells.append(f"+{added} / {answered}")
            print(f"| {threshold} | {gate} | " + " | ".join(cells) + " |")
    judged = [r for r in rows if r["judgeable"]]
    for chosen_on, sets in groups.items():
        near = [r["score"] for r in judged if set_number(r) in sets and r["kind"] == "near_misses"]
        threshold = math.floor(max(near, default=0.0) * 1000 + 1) / 1000
        cells = []
        for name, other in groups.items():
            hit = [r for r in judged if set_number(r) in other and r["score"] >= threshold]
            added = sum(r["kind"] == "paraphrases" for r in hit)
            cells.append(f"sets {name}: +{added} / {len(hit) - added}")
        print(f"chosen on {chosen_on}: {threshold} (same kind); " + ", ".join(cells))


if __name__ == "__main__":
    main()
