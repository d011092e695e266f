"""Synonyms from WordNet 3.1 for the lexical check (llm/cache/lexical/): two words are one when
they share one of their three most common senses ("wrong" / "incorrect", "stop" / "quit"), when
one's most common sense is any sense of the other ("apartment" / "flat", "elevator" / "lift").
A word is never paired with a kind of it: a freezer is a kind of fridge in WordNet, rugby a kind
of football, a volcano a kind of mountain, ibuprofen a kind of NSAID, and a question about one
wants another answer than a question about the other (blind sets 10 and 11). The table still
holds each synset's direct hypernyms (llm/cache/build_synonyms.py); the check does not read them.

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


@dataclass(frozen=True)
class _Table:
    index: dict[str, int]  # word -> its row
    starts: np.ndarray  # row -> where its senses start in `senses`
    senses: np.ndarray  # synset number * 8 + rank


@lru_cache(maxsize=1)
def _table() -> _Table:
    with np.load(TABLE) as data:
        words = bytes(data["words"]).decode().split("\n")
        return _Table(
            index={word: row for row, word in enumerate(words)},
            starts=data["starts"],
            senses=data["senses"],
        )


@lru_cache(maxsize=65536)
def _senses(word: str, limit: int = SENSES) -> frozenset[int]:
    table = _table()
    row = table.index.get(word)
    if row is None or len(word) < 3 or word in _NEVER:
        return frozenset()
    codes = table.senses[table.starts[row] : table.starts[row + 1]]
    return frozenset(int(code) // 8 for code in codes if code % 8 < limit)


def related_in_any_sense(a: str, b: str) -> bool:
    """Do `a` and `b` share any of their senses (the first eight: "stain" / "mark", "booking" /
    "reservation")? Looser than `synonymous`, so the lexical check asks it only of two questions
    the embedding already finds very close (verdict.LOOSE_SIMILARITY). Never a word and a kind
    of it ("football" / "rugby", "fridge" / "freezer"), nor two kinds of one thing: "Monday" /
    "Tuesday", "enable" / "disable", "union" / "league" share a parent, not a sense."""
    if a == b or (" " in a + b and a.split(" ")[0] == b.split(" ")[0]):
        return False
    return bool(_senses(a, ANY_SENSE) & _senses(b, ANY_SENSE))


def synonymous(a: str, b: str) -> bool:
    """Are `a` and `b` (lemmas) one word for the same thing (see the module's docstring)?"""
    if a == b or (" " in a + b and a.split(" ")[0] == b.split(" ")[0]):
        # "check out" is not "check"; "round up" is not "round down", though WordNet files
        # both under "express as a round number".
        return False
    senses_a, senses_b = _senses(a), _senses(b)
    if senses_a & senses_b:
        return True
    return bool(_senses(a, 1) & _senses(b, ANY_SENSE) or _senses(a, ANY_SENSE) & _senses(b, 1))


def is_word(word: str) -> bool:
    """Is `word` an entry of WordNet (a word of the language, not a fragment of one)?"""
    return word in _table().index
