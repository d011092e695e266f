"""Word comparison: which content words of one question the other lacks once forms of one word
("file"/"filing"), spellings (llm/cache/spelling.py) and WordNet synonyms are paired."""

from __future__ import annotations

from collections.abc import Callable

from llm.cache.everyday import COUNTRIES, SHORT_FORMS, country_of, everyday_synonymous
from llm.cache.lexical.profile import Profile, canonical_of, lemma_of, letters_only
from llm.cache.lexicon import ABBREVIATIONS, CONTEXT
from llm.cache.spelling import pair_spellings
from llm.cache.synonyms import is_word, related_in_any_sense, synonymous

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


# An adverb is its adjective with -ly ("safely" / "safe", "quickly" / "quick"); the adjective
# must be a word of four letters or more ("early" is not "ear", "apply" not "app").
_ADVERB_STEM = 4


def _adverb_of(longer: str, shorter: str) -> bool:
    return (
        longer.endswith("ly")
        and len(shorter) >= _ADVERB_STEM
        and longer[:-2] in (shorter, shorter[:-1] + "i")  # "happily" / "happy"
        and is_word(shorter)
    )


def _agent_and_patient(a: str, b: str) -> bool:
    """Do `a` and `b` name the one who acts and the one acted on, from one stem ("employer" /
    "employee", "trainer" / "trainee", "payer" / "payee", "mentor" / "mentee")? Two people."""
    return any(
        x.endswith("ee") and y.endswith(("er", "or")) and len(x) > 5 and x[:-2] == y[:-2]
        for x, y in ((a, b), (b, a))
    )


_COUNTRY_NAMES = frozenset(COUNTRIES.values())


def _related(a: str, b: str) -> bool:
    """One word in two forms ("summary"/"summarize", "discover"/"discoverer", "file"/"filing")?"""
    if a == b:
        return True
    if " " in a or " " in b:  # a phrasal verb: "round up" is not "round down"
        return False
    if _agent_and_patient(a, b) or a in _COUNTRY_NAMES or b in _COUNTRY_NAMES:
        return False  # a country is not another's form: "Niger" / "Nigeria"
    if _stem_of(a, b) or _stem_of(b, a) or _adverb_of(a, b) or _adverb_of(b, a):
        return True
    shorter = min(len(a), len(b))
    shared = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), shorter)
    return shared >= _SHARED_PREFIX and shared >= _SHARED_SHARE * shorter


def _unmatched(a: tuple[str, ...], b: tuple[str, ...]) -> list[str]:
    """Words of `a` left when each is paired with a different word of `b` in the same form."""
    return _pair(list(a), list(b), _related)[0]


def _forms(word: str, profile: Profile) -> set[str]:
    """The word as compared and the lemmas it was made from."""
    return {word} | {lemma for canonical, lemma in profile.sources if canonical == word}


def _pair(
    only_a: list[str], only_b: list[str], paired: Callable[[str, str], bool]
) -> tuple[list[str], list[str]]:
    """Each word of `only_a` paired with the first word of `only_b` that `paired` accepts."""
    left_b = list(only_b)
    unpaired = []
    for word in only_a:
        pair = next((i for i, other in enumerate(left_b) if paired(word, other)), None)
        if pair is None:
            unpaired.append(word)
        else:
            del left_b[pair]
    return unpaired, left_b


def _pair_forms(
    only_a: list[str], only_b: list[str], a: Profile, b: Profile
) -> tuple[list[str], list[str]]:
    """Pair two forms of one word that their synonym groups hid: "building" and "build" (compared
    as "construct"), "deletion" and "delete" (compared as "remove")."""
    return _pair(
        only_a,
        only_b,
        lambda x, y: any(_related(f, g) for f in _forms(x, a) for g in _forms(y, b)),
    )


# A typo: a content word no dictionary knows, of at least TYPO_MIN_LENGTH letters, one edit
# (two from TYPO_LONG letters on) from a word the other side has and this side lacks, which is
# itself a word ("pyhton" / "python", "recieve" / "receive", "accomodation" / "accommodation").
# Two unknown words (two product names: "mysql" / "mssql") pair only from TYPO_LONG letters on,
# one edit apart ("javscript" / "javascript").
TYPO_MIN_LENGTH = 5
TYPO_LONG = 8


def _edits(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance (a swap of two neighbours is one edit), or limit + 1
    once it is certain to exceed `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        row = [i]
        for j, y in enumerate(b, 1):
            cost = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (x != y))
            if i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                cost = min(cost, previous2[j - 2] + 1)
            row.append(cost)
        if min(row) > limit:
            return limit + 1
        previous2, previous = previous, row
    return previous[-1]


def _typo_of(typed: str, word: str) -> bool:
    if len(typed) < TYPO_MIN_LENGTH or " " in typed + word or typed[0] != word[0]:
        return False
    if is_word(typed) or lemma_of(typed) != typed or letters_only(typed):
        return False
    if typed in _COUNTRY_NAMES or word in _COUNTRY_NAMES:
        return False  # "Niger" / "Nigeria", "Austria" / "Australia": two places, not a typo
    if not is_word(word):
        # Two unknown words (names) pair only when long and one edit apart: "javscript" /
        # "javascript", never "mysql" / "mssql".
        return len(word) >= TYPO_LONG and _edits(typed, word, 1) <= 1
    limit = 2 if len(word) >= TYPO_LONG else 1
    return _edits(typed, word, limit) <= limit


# Endings a typed word keeps while the word it misspells is compared as its lemma
# ("recomended" / "recommended", compared as "recommend").
_INFLECTIONS = ("ed", "ing", "es", "s")


def _misspells(typed: str, word: str) -> bool:
    """Is `typed` a typo of `word`, or of `word` inflected ("recomended" / "recommend")?"""
    return _typo_of(typed, word) or any(
        typed.endswith(ending) and _typo_of(typed[: -len(ending)], word)
        for ending in _INFLECTIONS
        if not is_word(typed)
    )


def _pair_typos(
    only_a: list[str], only_b: list[str], a: Profile, b: Profile
) -> tuple[list[str], list[str]]:
    """Pair a typo with the word it misspells, in any form the other side said it ("diffrence"
    / "difference", compared as "differ")."""
    only_a, only_b = _pair(only_a, only_b, lambda x, y: any(_misspells(x, g) for g in _forms(y, b)))
    only_b, only_a = _pair(only_b, only_a, lambda x, y: any(_misspells(x, g) for g in _forms(y, a)))
    return only_a, only_b


def _said_as(word: str, profile: Profile) -> set[str]:
    """The lemmas `word` was said as, or the word: "update" for a "change" that was said
    "update" (an everyday synonym of "change" is not one of "update")."""
    return {lemma for canonical, lemma in profile.sources if canonical == word} or {word}


def _pair_synonyms(
    only_a: list[str], only_b: list[str], a: Profile, b: Profile, *, loose: bool = False
) -> tuple[list[str], list[str]]:
    """Pair each word one side lacks with a WordNet synonym the other side lacks ("wrong" /
    "incorrect"), an everyday one WordNet misses ("toxic" / "poisonous") or, for a country's
    adjective, its name ("French" / "France"); entities, numbers and units have none that could
    pair them wrongly."""
    wordnet = related_in_any_sense if loose else synonymous

    def paired(word: str, other: str) -> bool:
        if any(wordnet(x, y) for x in _forms(word, a) for y in _forms(other, b)):
            return True
        return any(
            everyday_synonymous(x, y) or country_of(x, y)
            for x in _said_as(word, a)
            for y in _said_as(other, b)
        )

    return _pair(only_a, only_b, paired)


def content_difference(
    a: Profile, b: Profile, *, loose: bool = False
) -> tuple[list[str], list[str]]:
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
        only_a, only_b = _pair_forms(only_a, only_b, a, b)
    if only_a and only_b:
        only_a, only_b = _pair_typos(only_a, only_b, a, b)
    if only_a and only_b:
        only_a, only_b = _pair_synonyms(only_a, only_b, a, b)
    if only_a and only_b and loose:
        only_a, only_b = _pair_synonyms(only_a, only_b, a, b, loose=True)
    if only_a and only_b:
        return only_a, only_b
    if "duration" in a.content and "duration" in b.content:
        # "how long" and "how many minutes" ask the same; two different units do not.
        only_a = [w for w in only_a if w not in _TIME_UNITS]
        only_b = [w for w in only_b if w not in _TIME_UNITS]
    return (
        [w for w in only_a if w not in CONTEXT and w not in b.content and not _said(w, b)],
        [w for w in only_b if w not in CONTEXT and w not in a.content and not _said(w, a)],
    )


def _typed(word: str, other: Profile) -> bool:
    """Is `word` a typo of a word the other question has, compared or not ("recieve" /
    "receive", which is compared as the framing "get")?"""
    return any(_typo_of(word, lemma_of(w)) for w in other.words)


def _said(word: str, other: Profile) -> bool:
    """Does the other question say `word` in another form or with a typo, as a word the check
    does not compare ("learn coding" / "learn to code": "code" only frames)?"""
    if SHORT_FORMS.get(word) in other.words:  # "the USA" / "US restaurants"
        return True
    return any(
        _typo_of(word, lemma) or _related(word, lemma) for lemma in map(lemma_of, other.words)
    )


def typo_paired(a: Profile, b: Profile) -> bool:
    """Does a content word of one side pair with the other's only as its typo? The embedding
    knows no misspelling ("pyhton" is far from "python"), so such a pair gets the margin an
    abbreviation gets (verdict.LEXICAL_MARGIN)."""
    return any(_typed(w, b) for w in a.content) or any(_typed(w, a) for w in b.content)


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
