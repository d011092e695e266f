"""Screen a candidate second-stage judge for the reply cache on the tuning pair sets (issue 18).

A judge could only be allowed to overrule the lexical check's soft refusals: "content" and
"added" (a content word differs, or one side has one more). The hard ones (numbers, negation,
quotes, particles, direction, quantity, subject; llm/cache/lexical/verdict.py) stay. So every
tuning pair refused softly is scored by the candidate, and the question is how many refused
rewordings score above every refused near-miss: what the judge could add at 0 false hits.

    .venv/bin/python bench/judge_screen.py            # the cache's own MiniLM cosine, as a judge
    PYTHONPATH=DIR .venv/bin/python bench/judge_screen.py --onnx MODEL.onnx
        # a sentence-embedding model exported to ONNX (inputs input_ids and attention_mask, a
        # (batch, tokens, width) output mean-pooled), run by onnxruntime installed with
        # `pip install --no-deps --target DIR onnxruntime` (not a project dependency); the
        # tokenizer is MiniLM's unless --tokenizer names another tokenizer.json

Prints the soft refusals, the rewordings gained at 0, 1, 3 and 10 false hits, the first pairs
of the ranking, and what the scorer costs per pair (p50/p95) and in resident memory. Results:
docs/caching.md, "No re-ranking model".
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cache_bench  # the pair sets and the embedded Django set-up

SOFT = ("content", "added")
Scorer = Callable[[str, str], float]


def soft_refusals() -> list[dict[str, Any]]:
    """Every tuning pair the check refuses only for its content words, with its cosine."""
    from django.conf import settings

    from llm.cache.lexical.profile import profile
    from llm.cache.lexical.rewrite import normalise
    from llm.cache.lexical.verdict import match
    from llm.embeddings import embedder

    threshold = settings.CACHE_SEMANTIC_THRESHOLD
    model = embedder()
    rows = []
    for label, _, block in cache_bench.pair_blocks():
        for kind in ("paraphrases", "near_misses"):
            pairs = block[kind]
            a = model.embed([normalise(p["a"]) for p in pairs])
            b = model.embed([normalise(p["b"]) for p in pairs])
            for pair, similarity in zip(pairs, (a * b).sum(axis=1), strict=True):
                cosine = float(similarity)
                reason = match(profile(pair["b"]), profile(pair["a"]), cosine, threshold)
                if reason in SOFT:
                    rows.append(
                        {"set": label, "kind": kind, "a": pair["a"], "b": pair["b"], "cos": cosine}
                    )
    return rows


def minilm_scorer() -> Scorer:
    """The cosine the cache already has: the baseline any judge must beat."""
    from llm.cache.lexical.rewrite import normalise
    from llm.embeddings import embedder

    model = embedder()

    def score(a: str, b: str) -> float:
        vectors = model.embed([normalise(a), normalise(b)])
        return float(vectors[0] @ vectors[1])

    return score


def onnx_scorer(model_path: Path, tokenizer_path: Path | None) -> Scorer:
    """Cosine of two mean-pooled sentence vectors from an ONNX sentence-embedding model."""
    import numpy as np
    import onnxruntime  # type: ignore[import-not-found]
    from tokenizers import Tokenizer

    from llm.cache.lexical.rewrite import normalise
    from llm.embeddings import model_dir

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model_path), options)
    names = {item.name for item in session.get_inputs()}
    tokenizer = Tokenizer.from_file(str(tokenizer_path or model_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=128)
    tokenizer.enable_padding(pad_id=0)

    def score(a: str, b: str) -> float:
        encodings = tokenizer.encode_batch([normalise(a), normalise(b)])
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": mask,
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        outputs = session.run(None, {k: v for k, v in feed.items() if k in names})
        tokens = next(o for o in outputs if o.ndim == 3 and o.dtype == np.float32)
        pooled = (tokens * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1)[:, None]
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
        return float(pooled[0] @ pooled[1])

    return score


def report(rows: list[dict[str, Any]], name: str, seconds: list[float], rss: float) -> None:
    def words(text: str) -> list[str]:
        return sorted(re.findall(r"\w+", text.casefold()))

    rewordings = [r for r in rows if r["kind"] == "paraphrases"]
    near = [r for r in rows if r["kind"] == "near_misses"]
    # Near-misses with the very same words ("from English to German" / "from German to
    # English") no score of a bag of words can refuse; listed apart so they do not hide the rest.
    anagrams = [r for r in near if words(r["a"]) == words(r["b"])]
    print(f"## {name}")
    print(
        f"soft refusals on the tuning sets: {len(rewordings)} rewordings, {len(near)} "
        f"near-misses ({len(anagrams)} of them the same words in another order)"
    )
    for label, against in (
        ("all near-misses", near),
        ("without those", [*set_minus(near, anagrams)]),
    ):
        ranked = sorted((r["score"] for r in against), reverse=True)
        gains = []
        for false_hits in (0, 1, 3, 10):
            bar = ranked[false_hits] if false_hits < len(ranked) else float("-inf")
            gained = [r for r in rewordings if r["score"] > bar]
            nine = sum(r["set"].startswith("held-out 9") for r in gained)
            gains.append(f"{false_hits} false: +{len(gained)} (held-out 9: +{nine})")
        print(f"  against {label}: " + "; ".join(gains))
    print("  the ranking's first 12 (without the same-word near-misses):")
    ranking = sorted([*rewordings, *set_minus(near, anagrams)], key=lambda r: -r["score"])
    for r in ranking[:12]:
        tag = "rewording " if r["kind"] == "paraphrases" else "near-miss "
        print(f"    {tag}{r['score']:.3f}  {r['a']!r} / {r['b']!r}")
    ordered = sorted(seconds)
    p50 = ordered[len(ordered) // 2] * 1000
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000
    print(f"  cost per pair: p50 {p50:.1f} ms, p95 {p95:.1f} ms; resident memory +{rss:.0f} MB")


def set_minus(rows: list[dict[str, Any]], drop: list[dict[str, Any]]) -> list[dict[str, Any]]:
    dropped = {id(r) for r in drop}
    return [r for r in rows if id(r) not in dropped]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--onnx", type=Path, help="a sentence-embedding model in ONNX")
    parser.add_argument("--tokenizer", type=Path, help="its tokenizer.json (default: MiniLM's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        cache_bench.setup_django(str(Path(directory) / "bench.sqlite3"))
        rows = soft_refusals()
        before = cache_bench.rss_mb()
        if args.onnx:
            name, scorer = (
                f"{args.onnx.name} (ONNX, mean-pooled)",
                onnx_scorer(args.onnx, args.tokenizer),
            )
        else:
            name, scorer = "all-MiniLM-L6-v2 cosine (the cache's own)", minilm_scorer()
        scorer("warm up", "warm up")
        seconds = []
        for row in rows:
            began = time.perf_counter()
            row["score"] = scorer(row["a"], row["b"])
            seconds.append(time.perf_counter() - began)
        report(rows, name, seconds, cache_bench.rss_mb() - before)


if __name__ == "__main__":
    main()
