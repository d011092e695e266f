"""Two spellings of the same words that no word list needs to know: an acronym and the words
it stands for ("GDPR" / "General Data Protection Regulation", "ETA" / "estimated time of
arrival"), and a compound written as one word or two ("firewood" / "fire wood", "hotspot" /
"hot spot"). Used by the lexical check (llm/cache/lexical/) on the content words each side has
and the other lacks; it only ever pairs words, so an entity still never equals another one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

# Words an acronym may skip ("estimated time of arrival" is ETA, "pounds per square inch" PSI).
_SKIPPED = frozenset({"of", "and", "the", "for", "to", "in", "on", "a", "per"})
_ACRONYM_LENGTHS = range(2, 7)


def _expansion(acronym: str, words: Sequence[str]) -> list[str] | None:
    """The run of `words` whose initials spell `acronym`, skipping small words inside it
    (returned too: "per" in "pounds per square inch" is part of what PSI says)."""
    for start in range(len(words)):
        if not words[start] or words[start][0] != acronym[0]:
            continue
        found, at = 0, start
        while found < len(acronym) and at < len(words):
            word = words[at]
            if word and word[0] == acronym[found]:
                found += 1
            elif not (found and word in _SKIPPED):
                break
            at += 1
        if found == len(acronym):
            return list(words[start:at])
    return None


def _drop(words: list[str], gone: Sequence[str]) -> list[str]:
    left = list(words)
    for word in gone:
        if word in left:
            left.remove(word)
    return left


def _pair_acronyms(
    only: list[str],
    other_only: list[str],
    other_words: Sequence[str],
    other_content: Sequence[str],
    canonical: Callable[[str], str],
) -> tuple[list[str], list[str]]:
    for word in list(only):
        if len(word) not in _ACRONYM_LENGTHS or not word.isalnum() or not other_only:
            continue
        run = _expansion(word, other_words)
        if run is None:
            continue
        skipped = [part for part in run if part in _SKIPPED]
        expanded = [canonical(part) for part in run if part not in _SKIPPED]
        # Every content word of the expansion must be one the other side has and this side
        # lacks; a word the check never compares ("processing", "number", "time") may be in
        # it ("CPU", "PIN", "ETA"), but at most one, and two words must pair.
        paired = [part for part in expanded if part in other_only]
        free = [part for part in expanded if part not in other_content]
        if len(paired) + len(free) == len(expanded) and len(paired) >= max(2, len(word) - 1):
            only = _drop(only, [word])
            other_only = _drop(other_only, paired + skipped)
    return only, other_only


def _pair_compounds(
    only: list[str],
    other_only: list[str],
    words: Sequence[str],
    other_content: Sequence[str],
    canonical: Callable[[str], str],
) -> tuple[list[str], list[str]]:
    """Pair two adjacent words of one side with the one word the other side writes them as
    ("fire wood" / "firewood", "smart phone" / "smartphone")."""
    for first, second in pairwise(words):
        joined = canonical(first + second)
        if joined in other_content:
            only = _drop(only, [canonical(first), canonical(second)])
            other_only = _drop(other_only, [joined])
    for word in words:
        # A verb and particle read as one word ("work out") written as one ("workout").
        if " " in word and (joined := canonical(word.replace(" ", ""))) in other_content:
            only = _drop(only, [canonical(word)])
            other_only = _drop(other_only, [joined])
    return only, other_only


def pair_spellings(
    only_a: list[str],
    only_b: list[str],
    words_a: Sequence[str],
    words_b: Sequence[str],
    content_a: Sequence[str],
    content_b: Sequence[str],
    canonical: Callable[[str], str],
) -> tuple[list[str], list[str]]:
    """The unmatched content words of each side, less those the other side only spells
    differently (an acronym, a compound)."""
    only_a, only_b = _pair_acronyms(only_a, only_b, words_b, content_b, canonical)
    only_b, only_a = _pair_acronyms(only_b, only_a, words_a, content_a, canonical)
    only_a, only_b = _pair_compounds(only_a, only_b, words_a, content_b, canonical)
    only_b, only_a = _pair_compounds(only_b, only_a, words_b, content_a, canonical)
    return only_a, only_b
