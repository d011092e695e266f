"""What a question is about beyond its content words: whom it is for ("for teams"), the words
it asks about as words ("the past tense of lie"), and a "what" that asks what a thing is for."""

from __future__ import annotations

import re

# Words the check takes as where a question is asked from ("my team's account") name whom it
# is for after "for": "the premium plan for teams" is not "the premium plan".
AUDIENCES = frozenset({"team", "customer"})


def after_for(words: list[str], at: int) -> bool:
    """Right after "for" ("for teams"; "for my team" is still where it is asked from)."""
    return at > 0 and words[at - 1] == "for"


# A word asked about as a word ("the past tense of lie", "should I use their or there") is
# compared as typed, like a quoted one: its lemma ("lay" is a form of "lie") or its being a
# stopword ("their") would hide what is asked.
_ABOUT_WORDS = re.compile(
    r"\b(?:tense|plural|singular|participle|conjugation|gerund|infinitive) of "
    r"(?:the (?:word|verb|noun) )?(\w+)|\b(?:conjugate|pluralize|pluralise) (\w+)$|"
    r"\b(?:use|say|write) (\w+) or (\w+)\b"
)


def words_as_words(words: list[str], quoted: tuple[str, ...]) -> tuple[str, ...]:
    found = {
        word for match in _ABOUT_WORDS.finditer(" ".join(words)) for word in match.groups() if word
    }
    return tuple(sorted({*quoted, *found}))


def asks_purpose(words: list[str]) -> bool:
    """Does "what" ask what a thing is for ("what is X used for", "what is a VPN for")?"""
    if words[-2:] == ["used", "for"]:
        return True
    return words[-1:] == ["for"] and words[1:2] in (["is"], ["are"]) and len(words) <= 6
