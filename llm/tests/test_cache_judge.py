"""The cross-encoder judge (llm/cache/judge.py): NumPy scores as torch scored them at export,
and its second look at candidates the lexical check refused (pairs of our own, not from the
sets it was trained on)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from llm.cache.judge import judge
from llm.cache.lexical.profile import profile
from llm.cache.lexical.verdict import judge_may_overrule, match, same_question
from llm.cache.semantic import ScopeIndex
from llm.embeddings import embedder, model_dir, safetensors_load

THRESHOLD = 0.60
# Judges v5 to v7 (trained towards 0.05 / 0.95, so their scores stop short of 1): these tests
# pin the mechanism at a threshold under its operating point (docs/benchmarks.md, "Cache: judge
# v5" and "Cache: round 9"; v7 scores the rewording below 0.8, v6b 0.94).
JUDGE_THRESHOLD = 0.7

# (stored, asked): a rewording the lexical check refuses for a word one side lacks.
REWORDED = [
    (
        "How do I get candle wax off a tablecloth?",
        "how can I remove candle wax from table linen",
    ),
]
# (stored, asked): another question the check refuses for the same soft reason.
NEAR_MISS = [
    ("How do I get candle wax off a tablecloth?", "How do I get candle wax off a carpet?"),
]


def _index(questions: list[str]) -> ScopeIndex:
    return ScopeIndex(
        version="test",
        ids=np.arange(1, len(questions) + 1, dtype=np.int64),
        faq=np.zeros(len(questions), dtype=bool),
        vectors=embedder().embed(questions),
        questions=questions,
    )


def _search(index: ScopeIndex, asked: str, judge_threshold: float | None):
    return index.search(
        embedder().embed([asked])[0],
        profile(asked),
        threshold=THRESHOLD,
        faq_only=False,
        judge_threshold=judge_threshold,
    )


def test_numpy_scores_reproduce_the_scores_torch_gave_at_export():
    references = judge().meta["references"]
    assert len(references) >= 24
    got = judge().scores([(r["a"], r["b"]) for r in references])
    assert max(abs(g - r["score"]) for g, r in zip(got, references, strict=True)) < 1e-3


def test_the_judge_reads_the_word_embeddings_it_was_trained_with():
    words = safetensors_load(model_dir() / "model.safetensors")["embeddings.word_embeddings.weight"]
    digest = hashlib.sha256(np.ascontiguousarray(words).tobytes()).hexdigest()
    assert digest == judge().meta["word_embeddings_sha256"]


def test_a_score_does_not_depend_on_which_question_was_stored():
    a, b = REWORDED[0]
    assert judge().scores([(a, b)]) == pytest.approx(judge().scores([(b, a)]), abs=1e-6)


@pytest.mark.parametrize(("stored", "asked"), REWORDED)
def test_the_judge_accepts_a_rewording_the_check_refused(stored, asked):
    index = _index([stored, "What is the boiling point of water?"])
    assert _search(index, asked, None) is None, "the check alone refuses it"
    found = _search(index, asked, JUDGE_THRESHOLD)
    assert found is not None and found[0] == 1


@pytest.mark.parametrize(("stored", "asked"), NEAR_MISS)
def test_the_judge_refuses_a_near_miss_the_check_refused_for_a_word(stored, asked):
    cosine = float(embedder().embed([stored])[0] @ embedder().embed([asked])[0])
    assert judge_may_overrule(profile(asked), profile(stored), cosine), "it gets a second look"
    assert _search(_index([stored]), asked, JUDGE_THRESHOLD) is None


@pytest.mark.parametrize(
    ("stored", "asked", "reason"),
    [
        ("Convert 5 miles to kilometres", "Convert 50 miles to kilometres", "numbers"),
        ("Is it safe to freeze cooked rice?", "Is it not safe to freeze cooked rice?", "negation"),
        ("How do I convert dollars to euros?", "How do I convert euros to dollars?", "direction"),
    ],
)
def test_hard_refusals_never_reach_the_judge(stored, asked, reason):
    assert same_question(profile(asked), profile(stored)) == reason
    assert match(profile(asked), profile(stored), 0.99, THRESHOLD)
    assert not judge_may_overrule(profile(asked), profile(stored), 0.99)
    # Even a judge that accepted everything would not be asked.
    assert _search(_index([stored]), asked, 1e-9) is None


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("What is a savings bond?", "Who can buy a savings bond?"),
        ("Where can I buy a bus pass in Leeds?", "How much is a bus pass in Leeds?"),
    ],
)
def test_another_kind_of_answer_never_reaches_the_judge(stored, asked):
    # The check refuses these for a soft reason (a word on one side), and the judge scores
    # such pairs like rewordings; one names a kind of answer (who, where, how much) the
    # other does not.
    assert same_question(profile(asked), profile(stored)) in ("added", "content")
    assert not judge_may_overrule(profile(asked), profile(stored), 0.99)
    assert _search(_index([stored]), asked, 1e-9) is None


def test_scores_stop_short_of_one_so_a_threshold_can_keep_a_margin():
    # Trained towards 0.95 for a rewording, 0.05 for a near-miss: a near-miss that changes one
    # word no longer saturates next to the rewordings.
    rewording, near_miss = judge().scores([REWORDED[0], NEAR_MISS[0]])
    assert 0.5 < rewording < 0.99
    assert near_miss < 0.1
