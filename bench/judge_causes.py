"""Why the reply cache's default matcher misses a rewording or answers a near-miss, counted over
every tuning set: which rule refused it, under which cosine floor, and what a judge scores it.

    PYTHONPATH=. .venv/bin/python bench/judge_causes.py                 # the shipped judge
    PYTHONPATH=. .venv/bin/python bench/judge_causes.py --judge-dir DIR --out rows.json
    PYTHONPATH=. .venv/bin/python bench/judge_causes.py --blind-commits   # the judge as a veto

Each pair is checked as the index checks it (`match`, the stored question first), whether the
judge is switched on or not; the reason under "similarity" is `same_question`'s. The judge's
score of every pair is printed beside, so one run shows both what the judge could add (refused
rewordings scored high) and what it could veto (accepted near-misses scored low).
--blind-commits also runs, on the sets the judge never saw, the lexical check frozen when each
set was blind (bench/cache_bench.py's baseline_guard): its false hits are the ones a veto must
catch on a set nobody has tuned on.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_bench import DATA, PAIR_SETS, baseline_guard, setup_django

# The check frozen when each set was run blind (docs/benchmarks.md, "Cache").
BLIND_COMMITS = {
    "tuning/cache_heldout10.json": "ad233fa",
    "tuning/cache_heldout11.json": "95c3422",
    "tuning/cache_heldout13.json": "ef55d82",
    "tuning/cache_heldout14.json": "e677fb0",
    "tuning/cache_heldout15.json": "554cc0c",
    "tuning/cache_heldout16.json": "0b9c934",
}
COSINE_BUCKETS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.3)
SCORE_BUCKETS = (0.99, 0.9, 0.5, 0.1)


def bucket(value: float, edges: tuple[float, ...]) -> str:
    for edge in edges:
        if value >= edge:
            return f">={edge}"
    return f"<{edges[-1]}"


def collect(
    judge_dir: Path | None,
    blind: bool,
    *,
    training: bool = False,
    judging: bool = True,
    only: set[str] | None = None,
) -> list[dict[str, Any]]:
    from django.conf import settings

    from llm.cache.judge import JUDGE_DIR, Judge
    from llm.cache.lexical.profile import profile
    from llm.cache.lexical.rewrite import normalise
    from llm.cache.lexical.verdict import floor, judge_may_overrule, match, same_question
    from llm.embeddings import embedder, model_dir

    threshold = settings.CACHE_SEMANTIC_THRESHOLD
    model = embedder()
    judge = Judge(judge_dir or JUDGE_DIR, model_dir()) if judging else None
    guards = (
        {name: baseline_guard(commit) for name, commit in BLIND_COMMITS.items()} if blind else {}
    )
    rows: list[dict[str, Any]] = []
    sets = list(PAIR_SETS)
    if training:  # written to train the judge: near-misses that test the rules too
        sets += [
            (path.stem, f"training/{path.name}", "")
            for path in sorted((DATA / "training").glob("*.json"))
        ]
    for label, name, key in sets:
        if only and Path(name).stem not in only:
            continue
        data = json.loads((DATA / name).read_text())
        block = data[key] if key else data
        for kind in ("paraphrases", "near_misses"):
            pairs = block[kind]
            a = model.embed([normalise(p["a"]) for p in pairs])
            b = model.embed([normalise(p["b"]) for p in pairs])
            scores: list[float] = []
            for start in range(0, len(pairs), 32):
                chunk = pairs[start : start + 32]
                scores += (
                    judge.scores([(p["a"], p["b"]) for p in chunk])
                    if judge
                    else [float("nan")] * len(chunk)
                )
            for pair, cosine, score in zip(pairs, (a * b).sum(axis=1), scores, strict=True):
                asked, stored = profile(pair["b"]), profile(pair["a"])
                c = float(cosine)
                verdict = match(asked, stored, c, threshold)
                guard = guards.get(name)
                rows.append(
                    {
                        "set": label,
                        "file": name,
                        "kind": kind,
                        "label": pair.get("kind", pair.get("differs", "?")),
                        "a": pair["a"],
                        "b": pair["b"],
                        "cosine": c,
                        "verdict": verdict,
                        "reason": same_question(asked, stored) or "same words",
                        "under_floor": c < floor(threshold),
                        "judgeable": bool(verdict) and judge_may_overrule(asked, stored, c),
                        "score": score,
                        "blind_hit": guard.hit(pair["a"], pair["b"], c, threshold)
                        if guard
                        else None,
                    }
                )
    return rows


def recheck(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows written before, checked again by today's lexical check (the cosines and scores kept:
    the embedding reads the question as typed, not as the check rewrites it)."""
    from django.conf import settings

    from llm.cache.lexical.profile import profile
    from llm.cache.lexical.verdict import floor, judge_may_overrule, match, same_question

    threshold = settings.CACHE_SEMANTIC_THRESHOLD
    out = []
    for r in rows:
        asked, stored, c = profile(r["b"]), profile(r["a"]), r["cosine"]
        verdict = match(asked, stored, c, threshold)
        out.append(
            dict(
                r,
                was=r["verdict"],
                verdict=verdict,
                reason=same_question(asked, stored) or "same words",
                under_floor=c < floor(threshold),
                judgeable=bool(verdict) and judge_may_overrule(asked, stored, c),
            )
        )
    changed = [r for r in out if bool(r["was"]) != bool(r["verdict"])]
    for r in changed:
        now = "hit" if not r["verdict"] else f"refused ({r['verdict']})"
        print(f"changed: {r['kind']} {r['set']}: now {now}: {r['a']!r} / {r['b']!r}")
    return out


def report(rows: list[dict[str, Any]]) -> None:
    para = [r for r in rows if r["kind"] == "paraphrases"]
    near = [r for r in rows if r["kind"] == "near_misses"]
    misses = [r for r in para if r["verdict"]]
    false = [r for r in near if not r["verdict"]]
    print(
        f"rewordings {len(para)}, hit {len(para) - len(misses)}; near-misses {len(near)}, "
        f"hit {len(false)}"
    )

    print("\n## Misses by the rule that refused them (reason under 'similarity' in brackets)")
    by: Counter[str] = Counter()
    for r in misses:
        shown = r["verdict"] if r["verdict"] != "similarity" else f"similarity [{r['reason']}]"
        if r["under_floor"]:
            shown = "under the floor (cosine < 0.30)"
        by[shown] += 1
    for reason, n in by.most_common():
        print(f"| {reason} | {n} |")

    print("\n## Misses by cosine and reason")
    grid: dict[str, Counter[str]] = defaultdict(Counter)
    for r in misses:
        grid[r["reason"]][bucket(r["cosine"], COSINE_BUCKETS)] += 1
    cols = [f">={e}" for e in COSINE_BUCKETS] + [f"<{COSINE_BUCKETS[-1]}"]
    print("| reason | " + " | ".join(cols) + " | all |")
    for reason, counts in sorted(grid.items(), key=lambda kv: -sum(kv[1].values())):
        print(
            f"| {reason} | "
            + " | ".join(str(counts[c]) for c in cols)
            + f" | {sum(counts.values())} |"
        )

    print("\n## Misses and refused near-misses by judge score (judgeable: soft reason, cos>=0.5)")
    for kind, group in (("rewordings", misses), ("near-misses", [r for r in near if r["verdict"]])):
        for judgeable in (True, False):
            sub = [r for r in group if r["judgeable"] == judgeable]
            counts = Counter(bucket(r["score"], SCORE_BUCKETS) for r in sub)
            cells = ", ".join(
                f"{c} {counts[c]}"
                for c in [f">={e}" for e in SCORE_BUCKETS] + [f"<{SCORE_BUCKETS[-1]}"]
            )
            print(f"{kind}, {'judgeable' if judgeable else 'not judgeable'}: {len(sub)}: {cells}")

    print("\n## Accepted pairs by judge score (what a veto below the score would cost / catch)")
    accepted_para = sorted(r["score"] for r in para if not r["verdict"])
    for veto in (0.01, 0.05, 0.1, 0.2, 0.3, 0.5):
        lost = sum(s < veto for s in accepted_para)
        caught = sum(r["score"] < veto for r in false)
        print(
            f"veto below {veto}: rewordings lost {lost}/{len(accepted_para)}, "
            f"false hits caught {caught}/{len(false)}"
        )
    for r in false:
        print(f"  false hit {r['score']:.4f} {r['cosine']:.3f} {r['set']}: {r['a']!r} / {r['b']!r}")

    blind = [r for r in rows if r["blind_hit"] is not None]
    if blind:
        print("\n## The check frozen at each blind run, and a veto (sets the judge never saw)")
        for veto in (0.01, 0.05, 0.1, 0.2, 0.3, 0.5):
            lost = sum(
                r["blind_hit"] and r["score"] < veto for r in blind if r["kind"] == "paraphrases"
            )
            fh = [r for r in blind if r["kind"] == "near_misses" and r["blind_hit"]]
            caught = sum(r["score"] < veto for r in fh)
            print(
                f"veto below {veto}: blind-time hits lost {lost}, false hits caught "
                f"{caught}/{len(fh)}"
            )
        for r in blind:
            if r["kind"] == "near_misses" and r["blind_hit"]:
                print(
                    f"  blind false hit {r['score']:.4f} {r['cosine']:.3f} {r['file']}: "
                    f"{r['a']!r} / {r['b']!r}"
                )

    print("\n## Per set: misses (judgeable), false hits")
    for label in dict.fromkeys(r["set"] for r in rows):
        s = [r for r in rows if r["set"] == label]
        p = [r for r in s if r["kind"] == "paraphrases"]
        m = [r for r in p if r["verdict"]]
        f = [r for r in s if r["kind"] == "near_misses" and not r["verdict"]]
        print(
            f"| {label} | {len(p) - len(m)}/{len(p)} | {len(m)} ({sum(r['judgeable'] for r in m)})"
            f" | {len(f)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--judge-dir", type=Path, help="a judge other than the shipped one")
    parser.add_argument("--out", type=Path, help="every pair's row, as JSON")
    parser.add_argument("--blind-commits", action="store_true")
    parser.add_argument("--rows", type=Path, help="report from rows written before")
    parser.add_argument(
        "--training", action="store_true", help="the judge's training sets too (rules only)"
    )
    parser.add_argument("--no-judge", action="store_true", help="no judge scores (faster)")
    parser.add_argument(
        "--sets", nargs="+", help="only these sets (file stems, e.g. cache_heldout19)"
    )
    parser.add_argument(
        "--recheck", action="store_true", help="with --rows: today's check on them (seconds)"
    )
    args = parser.parse_args()
    if args.rows:
        rows = json.loads(args.rows.read_text())
        if args.recheck:
            with tempfile.TemporaryDirectory() as directory:
                setup_django(str(Path(directory) / "bench.sqlite3"))
                rows = recheck(rows)
    else:
        with tempfile.TemporaryDirectory() as directory:
            setup_django(str(Path(directory) / "bench.sqlite3"))
            rows = collect(
                args.judge_dir,
                args.blind_commits,
                training=args.training,
                judging=not args.no_judge,
                only=set(args.sets) if args.sets else None,
            )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    report(rows)


if __name__ == "__main__":
    main()
