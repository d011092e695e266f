"""Which pairs of every set (tuning and training) another commit's lexical check treats
differently from this one's: both checks rewrite every question; only the pairs whose rewriting
differs can change verdict, and those are matched by both at their embedding's cosine.

    git archive 1d898f7 | tar -x -C /tmp/base      # the other commit's tree
    PYTHONPATH=. .venv/bin/python bench/check_diff.py --base /tmp/base

Seconds, where bench/judge_causes.py --training embeds all 21,000 pairs (the better part of an
hour on a busy machine). The other tree is run in a subprocess with its own code and this venv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()


def pairs() -> list[dict[str, Any]]:
    out = []
    files = sorted((DATA / "tuning").glob("*.json")) + sorted((DATA / "training").glob("*.json"))
    for path in files:
        data = json.loads(path.read_text())
        for block in [data] + [data[k] for k in ("held_out", "held_out_2") if k in data]:
            for kind in ("paraphrases", "near_misses"):
                out += [
                    {"set": path.stem, "kind": kind, "a": p["a"], "b": p["b"]} for p in block[kind]
                ]
    return out


def rewrites(items: list[dict[str, Any]]) -> list[list[str]]:
    from llm.cache.lexical.rewrite import rewrite

    return [[rewrite(p["a"]), rewrite(p["b"])] for p in items]


def verdicts(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The check's verdict on each pair (the stored question a) at its "cosine"."""
    from django.conf import settings

    from llm.cache.lexical.profile import profile
    from llm.cache.lexical.verdict import judge_may_overrule, match

    out = []
    for p in items:
        asked, stored = profile(p["b"]), profile(p["a"])
        verdict = match(asked, stored, p["cosine"], settings.CACHE_SEMANTIC_THRESHOLD)
        judged = bool(verdict) and judge_may_overrule(asked, stored, p["cosine"])
        out.append(dict(p, verdict=verdict, judgeable=judged))
    return out


def _in_base(base: Path, mode: str, given: Path, out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(base))
    command = [sys.executable, str(Path(__file__).resolve()), mode, str(given), str(out)]
    subprocess.run(command, cwd=base, env=env, check=True)


def state(p: dict[str, Any]) -> str:
    if not p["verdict"]:
        return "hit"
    return "soft" if p["verdict"] in ("content", "added", "similarity") else "hard"


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] in ("--rewrites-of", "--verdicts-of"):
        _setup()  # run inside the other tree
        items = json.loads(Path(sys.argv[2]).read_text())
        done = rewrites(items) if sys.argv[1] == "--rewrites-of" else verdicts(items)
        Path(sys.argv[3]).write_text(json.dumps(done))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other commit's tree")
    args = parser.parse_args()
    _setup()
    items = pairs()
    with tempfile.TemporaryDirectory() as directory:
        given, got = Path(directory) / "pairs.json", Path(directory) / "got.json"
        given.write_text(json.dumps(items))
        _in_base(args.base, "--rewrites-of", given, got)
        before = json.loads(got.read_text())
        now = rewrites(items)
        changed = [p for p, x, y in zip(items, before, now, strict=True) if x != y]
        from llm.cache.lexical.rewrite import normalise
        from llm.embeddings import embedder

        model = embedder()
        a = model.embed([normalise(p["a"]) for p in changed])
        b = model.embed([normalise(p["b"]) for p in changed])
        for p, cosine in zip(changed, (a * b).sum(axis=1), strict=True):
            p["cosine"] = float(cosine)
        given.write_text(json.dumps(changed))
        _in_base(args.base, "--verdicts-of", given, got)
        old = json.loads(got.read_text())
    new = verdicts(changed)
    print(f"{len(items)} pairs, {len(changed)} rewritten differently")
    moves: Counter[tuple[str, str, str, str]] = Counter()
    for x, y in zip(old, new, strict=True):
        group = "training" if y["set"].startswith("train_") else y["set"]
        moves[(group, y["kind"], state(x), state(y))] += 1
        print(
            f"  {y['set']} {y['kind']} cos {y['cosine']:.3f}: {x['verdict'] or 'hit'}"
            f"{' (judged)' if x['judgeable'] else ''} -> {y['verdict'] or 'hit'}"
            f"{' (judged)' if y['judgeable'] else ''}: {y['a']!r} / {y['b']!r}"
        )
    print("| set | kind | before | now | pairs |")
    for (group, kind, was, is_), n in sorted(moves.items()):
        print(f"| {group} | {kind} | {was} | {is_} | {n} |")


if __name__ == "__main__":
    main()
