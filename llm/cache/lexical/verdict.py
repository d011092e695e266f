"""The lexical check's verdict on two questions, and the similarity it lets a match pass at:
numbers, negations, quotes and particles, then the rule families (order, quantities, words)."""

from __future__ import annotations

import re

from llm.cache.lexical.alternatives import other_alternative
from llm.cache.lexical.order import distance_either_way, reversed_order, same_route, swapped
from llm.cache.lexical.owners import other_owner
from llm.cache.lexical.profile import WORD, Profile, lemma_of
from llm.cache.lexical.quantities import other_quantity
from llm.cache.lexical.rewrite import rewrite
from llm.cache.lexical.words import content_difference, spelled_out, typo_paired

_PLAIN = re.compile(r"[\w\s',.?!]+")


def _quoted_alike(a: Profile, b: Profile) -> bool:
    """Is every span quoted on one side only written, unquoted, on the other ("what is 'cat'
    in Spanish" / "how do you say cat in Spanish")?"""

    def found(parts: tuple[str, ...], words: tuple[str, ...]) -> bool:
        return bool(parts) and any(
            words[i : i + len(parts)] == parts for i in range(len(words) - len(parts) + 1)
        )

    def written(span: str, words: tuple[str, ...]) -> bool:
        # As it is, or, a span of plain words, written as the questions are ("how much does
        # this cost?" is "price this"); one with symbols (code: "x -= 1") only as it is.
        return found(tuple(WORD.findall(span.casefold())), words) or bool(
            _PLAIN.fullmatch(span) and found(tuple(WORD.findall(rewrite(span))), words)
        )

    return all(written(span, b.words) for span in set(a.quoted) - set(b.quoted)) and all(
        written(span, a.words) for span in set(b.quoted) - set(a.quoted)
    )


def _other_degree(a: Profile, b: Profile) -> bool:
    """Does an adjective both say come as a superlative or comparative on one side only ("a
    cheap flight" / "the cheapest flight")? Only the same word counts: "faster" / "quicker" is
    the words' business."""
    degree_a, degree_b = dict(a.degrees), dict(b.degrees)
    said_a = {lemma_of(word) for word in a.words}
    said_b = {lemma_of(word) for word in b.words}
    return any(
        degree_a.get(lemma, "") != degree_b.get(lemma, "")
        for lemma in set(degree_a) | set(degree_b)
        if lemma in said_a and lemma in said_b
    )


_OBJECT_AUXILIARIES = frozenset("do does did will can should".split())
# Verbs whose object is an amount: "what does a plumber charge" asks "how much".
_AMOUNT_VERBS = frozenset("cost charge earn make pay weigh spend owe get take mean".split())


def _what_against_amount(a: Profile, b: Profile) -> bool:
    """Does `a` ask how much or how many where `b` asks what things ("how much does my
    insurance cover" / "what does my insurance cover")?"""
    words = b.words
    return (
        "amount" in a.asks
        and not b.asks
        and words[:1] == ("what",)
        and len(words) > 3
        and words[1] in _OBJECT_AUXILIARIES
        and not any(lemma_of(word) in _AMOUNT_VERBS for word in words[2:])
    )


# A yes/no question opening with "can I" asks whether it is possible or allowed, one opening
# with "should I" whether it is wise: "can I use git rebase on a shared branch" / "should I".
_MODALITIES = {"can": "allowed", "could": "allowed", "may": "allowed", "should": "advised"}


def _modality(profile: Profile) -> str:
    return _MODALITIES.get(profile.words[0], "") if profile.words else ""


def same_question(a: Profile, b: Profile) -> str:
    """ "" when `a` and `b` ask about the same things, "added" when one asks about more, else
    why they differ (for logs and the benchmark)."""
    if a.numbers != b.numbers:
        return "numbers"
    if a.negations != b.negations:
        return "negation"
    if a.quoted != b.quoted and not _quoted_alike(a, b):
        return "quoted"
    if a.particles != b.particles:
        return "particles"
    if (
        (reversed_order(a, b) or swapped(a.words, b.words))
        and not same_route(a, b)
        and not distance_either_way(a, b)
    ):
        return "direction"
    if other_quantity(a, b):
        return "quantity"
    if {a.subject, b.subject} == {"speaker", "other"}:
        return "subject"
    if other_owner(a, b):
        return "owner"
    if a.asks and b.asks and not a.asks & b.asks:
        return "question word"
    if _what_against_amount(a, b) or _what_against_amount(b, a) or "whole" in a.asks ^ b.asks:
        return "question word"
    if a.tense and b.tense and a.tense != b.tense:
        return "tense"
    if {_modality(a), _modality(b)} == {"allowed", "advised"}:
        return "modality"
    if _other_degree(a, b):
        return "degree"
    if other_alternative(a, b):
        return "alternative"
    only_a, only_b = content_difference(a, b)
    if only_a and only_b:
        return "content"
    if only_a or only_b:
        return "added"
    return ""


# A question with a content word more than the other ("... for my website", but also "sort a
# list of tuples") may be narrower: a match only this much above the threshold, and only with
# at most ADDED_MAX_WORDS such words. 0 (off by default): the held-out set showed a false hit
# from an added word, and a wrong answer costs more than a miss.
ADDED_MARGIN = 0.3
ADDED_MAX_WORDS = 0


# The embedding does not know most abbreviations and acronyms: "PW" and "password", "GDPR"
# and "General Data Protection Regulation" score 0.35-0.45, nor typos ("pyhton", "pasword").
# Two questions that differ only in that spelling (every content word paired, the same numbers,
# negation, quotes and direction) may match this much below the threshold; every other pair is
# bounded by the threshold.
LEXICAL_MARGIN = 0.3


# The similarity from which two questions whose words differ get a second look, with WordNet's
# rarer senses and direct kinds as synonyms (synonyms.related_in_any_sense).
LOOSE_SIMILARITY = 0.75


def floor(threshold: float) -> float:
    """The lowest similarity at which `match` can accept a candidate."""
    return threshold - LEXICAL_MARGIN


def match(a: Profile, b: Profile, similarity: float, threshold: float) -> str:
    """ "" when the stored question `b` may answer `a` at this cosine similarity, else why
    not ("similarity", or what same_question found)."""
    if similarity < floor(threshold):
        return "similarity"
    reason = same_question(a, b)
    if similarity < threshold:
        return "" if not reason and (spelled_out(a, b) or typo_paired(a, b)) else "similarity"
    if reason == "content" and similarity >= LOOSE_SIMILARITY:
        # The second look: words WordNet relates in any of their senses pair, for two questions
        # the embedding finds this close ("red wine stain on a carpet" / "red wine mark on a rug").
        only_a, only_b = content_difference(a, b, loose=True)
        if not only_a and not only_b:
            return ""
    if reason == "added":
        only_a, only_b = content_difference(a, b)
        if len(only_a) + len(only_b) <= ADDED_MAX_WORDS and similarity >= threshold + ADDED_MARGIN:
            return ""
    return reason


# The refusals the cross-encoder judge (llm/cache/judge.py) may overrule: a content word on one
# side only ("added") or on each side ("content"), and the same words a little under the
# threshold (""). Numbers, negation, quotes, particles, direction, quantities, another person's
# action, whose thing it is, can / should and another question word ("when" / "where did the
# Titanic sink", which the judge trained without blind sets 10 and 11 scored 0.995 there) stay
# refusals (docs/benchmarks.md, "Cache: a cross-encoder of our own").
JUDGE_REASONS = frozenset({"content", "added", ""})
# The judge is asked about candidates at least this close, at most JUDGE_CANDIDATES of them per
# lookup, the most similar first (each costs a forward pass of both orders).
JUDGE_MIN_SIMILARITY = 0.5
JUDGE_CANDIDATES = 2


def judge_may_overrule(a: Profile, b: Profile, similarity: float) -> bool:
    """May the judge accept `b` for `a`, which `match` refused at this similarity? Not when one
    question names a kind of answer the other does not ("what is a Roth IRA" / "who can open
    one", "where can I buy a SIM card" / "how much is one"): the judge scores such pairs like
    rewordings, and the check refuses them only when both name one."""
    return (
        similarity >= JUDGE_MIN_SIMILARITY
        and a.asks == b.asks
        and same_question(a, b) in JUDGE_REASONS
    )
