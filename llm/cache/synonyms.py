"""Synonyms from WordNet 3.1 for the lexical check (llm/cache/lexical/): two words are one when
they share one of their three most common senses ("wrong" / "incorrect", "stop" / "quit"), when
one's most common sense is any sense of the other ("apartment" / "flat", "elevator" / "lift",
"faucet" / "tap"), or when one's common sense is directly a kind of the other's ("solicitor" /
"lawyer").

Word embeddings could not do this: all-MiniLM-L6-v2 puts "Sunday" and "Saturday" (0.81),
"enable" and "disable" (0.72) closer than "tap" and "faucet" (0.46), so no cut-off separates
synonyms from the near-misses they would let through. WordNet's synsets never hold antonyms or
co-hyponyms (Saturday is not a synonym of Sunday), and only a word's first senses count, so a
rare sense ("minute" and "second" as "a short time") pairs nothing. The table is built once by
llm/cache/build_synonyms.py and committed; it loads on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

TABLE = Path(__file__).resolve().parent / "data" / "wordnet_synonyms.npz"
# Senses of each word (per part of speech, most common first) that may pair it with another
# word's: its first three; its first with any of the other's (the table keeps eight).
SENSES = 3
ANY_SENSE = 8
# Words that name a quantity or a point in time: their synsets pair senses ("minute" / "second",
# "first" / "1st") that the check compares as numbers and units instead.
_NEVER = frozenset(
    """second minute hour day week month year time first last one ace unit degree
    point place number""".split()
)


# A word whose sense is directly under the other's ("solicitor" is a kind of "lawyer") pairs too,
# for nouns only: a verb directly under another is a manner of doing it, another action ("hone"
# is "sharpen with a hone", "whisper" is "speak softly").
HYPERNYMS = True
# build_synonyms.py numbers synsets part of speech by part of speech (nouns, verbs, adjectives,
# adverbs, in the order of WordNet's index files); in the committed table the verbs' synsets
# are these ("aah" is the first verb in index.verb, "abactinal" the first adjective).
VERB_SYNSETS = range(81975, 95371)


@dataclass(frozen=True)
class _Table:
    index: dict[str, int]  # word -> its row
    starts: np.ndarray  # row -> where its senses start in `senses`
    senses: np.ndarray  # synset number * 8 + rank
    parent_starts: np.ndarray  # synset number -> where its hypernyms start in `parents`
    parents: np.ndarray


@lru_cache(maxsize=1)
def _table() -> _Table:
    with np.load(TABLE) as data:
        words = bytes(data["words"]).decode().split("\n")
        return _Table(
            index={word: row for row, word in enumerate(words)},
            starts=data["starts"],
            senses=data["senses"],
            parent_starts=data["parent_starts"],
            parents=data["parents"],
        )


@lru_cache(maxsize=65536)
def _senses(word: str, limit: int = SENSES) -> frozenset[int]:
    table = _table()
    row = table.index.get(word)
    if row is None or len(word) < 3 or word in _NEVER:
        return frozenset()
    codes = table.senses[table.starts[row] : table.starts[row + 1]]
    return frozenset(int(code) // 8 for code in codes if code % 8 < limit)


@lru_cache(maxsize=65536)
def _parents(word: str) -> frozenset[int]:
    table = _table()
    return frozenset(
        int(parent)
        for sense in _senses(word)
        if sense not in VERB_SYNSETS
        for parent in table.parents[table.parent_starts[sense] : table.parent_starts[sense + 1]]
    )


def related_in_any_sense(a: str, b: str) -> bool:
    """Do `a` and `b` share any of their senses (the first eight), or is one's sense directly
    a kind of the other's ("stain" / "mark", "booking" / "reservation", "bag" / "luggage")?
    Looser than `synonymous`, so the lexical check asks it only of two questions the embedding
    already finds very close (verdict.LOOSE_SIMILARITY). Never two co-hyponyms: "Monday" /
    "Tuesday", "enable" / "disable", "import" / "export" share a parent, not a sense."""
    if a == b or (" " in a + b and a.split(" ")[0] == b.split(" ")[0]):
        return False
    senses_a, senses_b = _senses(a, ANY_SENSE), _senses(b, ANY_SENSE)
    if senses_a & senses_b:
        return True
    table = _table()

    def parents(senses: frozenset[int]) -> set[int]:
        return {
            int(parent)
            for sense in senses
            if sense not in VERB_SYNSETS
            for parent in table.parents[table.parent_starts[sense] : table.parent_starts[sense + 1]]
        }

    return bool(parents(senses_a) & senses_b or parents(senses_b) & senses_a)


def synonymous(a: str, b: str) -> bool:
    """Are `a` and `b` (lemmas) one word for the same thing (see the module's docstring)?"""
    if a == b or (" " in a + b and a.split(" ")[0] == b.split(" ")[0]):
        # "check out" is not "check"; "round up" is not "round down", though WordNet files
        # both under "express as a round number".
        return False
    senses_a, senses_b = _senses(a), _senses(b)
    if senses_a & senses_b:
        return True
    if _senses(a, 1) & _senses(b, ANY_SENSE) or _senses(a, ANY_SENSE) & _senses(b, 1):
        return True
    return HYPERNYMS and bool(_parents(a) & senses_b or _parents(b) & senses_a)


def is_word(word: str) -> bool:
    """Is `word` an entry of WordNet (a word of the language, not a fragment of one)?"""
    return word in _table().index
