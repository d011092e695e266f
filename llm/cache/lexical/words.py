"""Word comparison: which content words of one question the other lacks once forms of one word
("file"/"filing"), spellings (llm/cache/spelling.py) and WordNet synonyms are paired."""

from __future__ import annotations

from llm.cache.lexical.profile import Profile, canonical_of
from llm.cache.lexicon import ABBREVIATIONS, CONTEXT
from llm.cache.spelling import pair_spellings
from llm.cache.synonyms import is_word, synonymous

# Two forms of one word share most of their spelling: "summary"/"summarize", "open"/"opening".
_SHARED_PREFIX = 5
_SHARED_SHARE = 0.75
_TIME_UNITS = frozenset("second minute hour day week month year".split())

# Suffixes that make a verb's noun or participle: "filing" / "file", "booking" / "book",
# "payment" / "pay", "arrival"... (not -er/-or: a "driver" is not a "drive").
_SUFFIXES = ("ation", "ment", "ing", "ion", "ed")


def _stem_of(longer: str, shorter: str) -> bool:
    """Is `longer` `shorter` with a verb suffix ("filing" = "fil(e)" + "ing")? `shorter` must be
    a word ("nation" is not "nat" + "ion")."""
    if not is_word(shorter):
        return False
    for suffix in _SUFFIXES:
        if longer.endswith(suffix) and len(longer) - len(suffix) >= 3:
            stem = longer[: -len(suffix)]
            if shorter in (stem, stem + "e") or (
                len(stem) > 3 and stem[-1] == stem[-2] and shorter == stem[:-1]
            ):
                return True
    return False


def _related(a: str, b: str) -> bool:
    """One word in two forms ("summary"/"summarize", "discover"/"discoverer", "file"/"filing")?"""
    if a == b:
        return True
    if " " in a or " " in b:  # a phrasal verb: "round up" is not "round down"
        return False
    if _stem_of(a, b) or _stem_of(b, a):
        return True
    shorter = min(len(a), len(b))
    shared = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), shorter)
    return shared >= _SHARED_PREFIX and shared >= _SHARED_SHARE * shorter


def _unmatched(a: tuple[str, ...], b: tuple[str, ...]) -> list[str]:
    """Words of `a` left when each is paired with a different word of `b` in the same form."""
    left = list(b)
    missing = []
    for word in a:
        pair = next((i for i, other in enumerate(left) if _related(word, other)), None)
        if pair is None:
            missing.append(word)
        else:
            del left[pair]
    return missing


def _forms(word: str, profile: Profile) -> set[str]:
    """The word as compared and the lemmas it was made from."""
    return {word} | {lemma for canonical, lemma in profile.sources if canonical == word}


def _pair_synonyms(
    only_a: list[str], only_b: list[str], a: Profile, b: Profile
) -> tuple[list[str], list[str]]:
    """Pair each word one side lacks with a WordNet synonym the other side lacks ("wrong" /
    "incorrect"); entities, numbers and units have none that could pair them wrongly."""
    left_b = list(only_b)
    unpaired = []
    for word in only_a:
        forms = _forms(word, a)
        pair = next(
            (
                i
                for i, other in enumerate(left_b)
                if any(synonymous(x, y) for x in forms for y in _forms(other, b))
            ),
            None,
        )
        if pair is None:
            unpaired.append(word)
        else:
            del left_b[pair]
    return unpaired, left_b


def content_difference(a: Profile, b: Profile) -> tuple[list[str], list[str]]:
    """Content words of `a` that `b` lacks, and of `b` that `a` lacks (repeats count: "a kilo
    of steel or a kilo of feathers" is not "a pound of steel or a kilo of feathers"). When only
    one side adds words, a repeat ("I forgot my password, how do I reset it") and words saying
    where the question is asked from ("my account") do not count."""
    only_a, only_b = _unmatched(a.content, b.content), _unmatched(b.content, a.content)
    if only_a or only_b:
        only_a, only_b = pair_spellings(
            only_a, only_b, a.words, b.words, a.content, b.content, canonical_of
        )
    if only_a and only_b:
        only_a, only_b = _pair_synonyms(only_a, only_b, a, b)
    if only_a and only_b:
        return only_a, only_b
    if "duration" in a.content and "duration" in b.content:
        # "how long" and "how many minutes" ask the same; two different units do not.
        only_a = [w for w in only_a if w not in _TIME_UNITS]
        only_b = [w for w in only_b if w not in _TIME_UNITS]
    return (
        [w for w in only_a if w not in CONTEXT and w not in b.content],
        [w for w in only_b if w not in CONTEXT and w not in a.content],
    )


def spelled_out(a: Profile, b: Profile) -> bool:
    """Does one side write as an abbreviation or acronym (or a compound) what the other spells
    out? Only asked of two questions whose content words all pair."""
    if not (a.content and b.content):
        return False
    # Abbreviations of words the check compares ("pw", "mg"), not of framing ("pls", "u").
    short_a = {w for w in a.words if ABBREVIATIONS.get(w, w) != w and canonical_of(w) in a.content}
    short_b = {w for w in b.words if ABBREVIATIONS.get(w, w) != w and canonical_of(w) in b.content}
    if short_a ^ short_b:
        return True
    only_a, only_b = _unmatched(a.content, b.content), _unmatched(b.content, a.content)
    if not (only_a and only_b):
        return False
    # Paired by spelling alone (an acronym, a compound); a WordNet synonym is not a spelling: the
    # embedding knows "incorrect" / "wrong" and gets no margin for them.
    only_a, only_b = pair_spellings(
        only_a, only_b, a.words, b.words, a.content, b.content, canonical_of
    )
    return not only_a and not only_b
