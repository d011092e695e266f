"""Choose the judge's thresholds on sets it was not trained on, from bench/judge_causes.py's rows.

    PYTHONPATH=. .venv/bin/python bench/judge_causes.py --blind-commits --out rows.json
    python bench/judge_threshold.py rows.json [--scores SCORES.json] --sets cache_heldout14 ...

--scores takes bench/judge_train.py's held-out scores (another judge, scored by torch) in place
of the rows' own. For each named set and threshold: rewordings the judge adds (refused by the
check for a soft reason, scored at or above it) and near-misses it answers; then, for a veto
(an accepted pair scored below it is refused), the check's hits it would lose and the false hits
it would catch, both for today's check and for the check frozen when each set was blind.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ADD = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 0.995, 0.9965, 0.998)
VETO = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)


def load(rows_path: Path, scores_path: Path | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(rows_path.read_text())
    if scores_path:
        scored = json.loads(scores_path.read_text())
        by = {
            (name, kind, p["a"], p["b"]): p["score"]
            for name, data in scored.items()
            for kind in ("paraphrases", "near_misses")
            for p in data[kind]
        }
        rows = [
            dict(r, score=by[(Path(r["file"]).stem, r["kind"], r["a"], r["b"])])
            for r in rows
            if (Path(r["file"]).stem, r["kind"], r["a"], r["b"]) in by
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rows", type=Path)
    parser.add_argument("--scores", type=Path)
    parser.add_argument("--sets", nargs="+", required=True)
    parser.add_argument("--add", type=float, nargs="*", default=ADD)
    parser.add_argument("--veto", type=float, nargs="*", default=VETO)
    args = parser.parse_args()
    rows = [r for r in load(args.rows, args.scores) if Path(r["file"]).stem in args.sets]
    names = [s for s in args.sets if any(Path(r["file"]).stem == s for r in rows)]

    def of(name: str, kind: str) -> list[dict[str, Any]]:
        return [r for r in rows if Path(r["file"]).stem == name and r["kind"] == kind]

    print("## The judge's second look: rewordings added / near-misses answered")
    print("| threshold | " + " | ".join(names) + " | all |")
    for t in args.add:
        cells, gained, answered = [], 0, 0
        for name in names:
            g = sum(r["judgeable"] and r["score"] >= t for r in of(name, "paraphrases"))
            f = sum(r["judgeable"] and r["score"] >= t for r in of(name, "near_misses"))
            cells.append(f"+{g} / {f}")
            gained, answered = gained + g, answered + f
        print(f"| {t} | " + " | ".join(cells) + f" | +{gained} / {answered} |")
    base = []
    for name in names:
        p, n = of(name, "paraphrases"), of(name, "near_misses")
        base.append(
            f"{name}: {sum(not r['verdict'] for r in p)}/{len(p)}, "
            f"{sum(not r['verdict'] for r in n)}/{len(n)}"
        )
    print("check alone: " + "; ".join(base))

    print("\n## A veto: accepted pairs scored below it refused (hits lost / false hits caught)")
    for label, accepted in (
        ("today's check", lambda r: not r["verdict"]),
        ("the check frozen at each blind run", lambda r: bool(r.get("blind_hit"))),
    ):
        print(f"\n{label}")
        print("| veto below | " + " | ".join(names) + " | all |")
        for v in args.veto:
            cells, lost, caught = [], 0, 0
            for name in names:
                x = sum(accepted(r) and r["score"] < v for r in of(name, "paraphrases"))
                y = sum(accepted(r) and r["score"] < v for r in of(name, "near_misses"))
                z = sum(accepted(r) for r in of(name, "near_misses"))
                cells.append(f"-{x} / {y} of {z}")
                lost, caught = lost + x, caught + y
            print(f"| {v} | " + " | ".join(cells) + f" | -{lost} / {caught} |")

    print("\n## Near-misses the second look would answer at the lowest thresholds")
    near = sorted(
        (r for r in rows if r["kind"] == "near_misses" and r["judgeable"]),
        key=lambda r: -r["score"],
    )
    for r in near[:12]:
        print(f"  {r['score']:.4f} {r['cosine']:.2f} {r['reason']:8} {r['a']!r} / {r['b']!r}")


if __name__ == "__main__":
    main()
