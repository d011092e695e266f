"""Synonyms from WordNet 3.1 for the lexical check (llm/cache/text.py): two words are one when
they share one of their most common senses ("wrong" / "incorrect", "stop" / "quit",
"get rid of" / "eliminate").

Word embeddings could not do this: all-MiniLM-L6-v2 puts "Sunday" and "Saturday" (0.81),
"enable" and "disable" (0.72) closer than "tap" and "faucet" (0.46), so no cut-off separates
synonyms from the near-misses they would let through. WordNet's synsets never hold antonyms or
co-hyponyms (Saturday is not a synonym of Sunday), and only a word's first senses count, so a
rare sense ("minute" and "second" as "a short time") pairs nothing. The table is built once by
llm/cache/build_synonyms.py and committed; it loads on first use.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "data" / "wordnet_synonyms.json.gz"
# Senses of each word (per part of speech, most common first) that may pair it: its first three.
SENSES = 3
# Words that name a quantity or a point in time: their synsets pair senses ("minute" / "second",
# "first" / "1st") that the check compares as numbers and units instead.
_NEVER = frozenset(
    """second minute hour day week month year time first last one ace unit degree
    point place number""".split()
)


# A word whose sense is directly under the other's ("solicitor" is a kind of "lawyer") pairs too.
HYPERNYMS = True


@lru_cache(maxsize=1)
def _table() -> tuple[dict[str, list[int]], dict[int, list[int]]]:
    raw = json.loads(gzip.decompress(TABLE.read_bytes()))
    return raw["words"], {int(k): v for k, v in raw["hypernyms"].items()}


@lru_cache(maxsize=65536)
def _senses(word: str) -> frozenset[int]:
    if len(word) < 3 or word in _NEVER:
        return frozenset()
    return frozenset(code // 8 for code in _table()[0].get(word, ()) if code % 8 < SENSES)


@lru_cache(maxsize=65536)
def _parents(word: str) -> frozenset[int]:
    hypernyms = _table()[1]
    return frozenset(parent for sense in _senses(word) for parent in hypernyms.get(sense, ()))


def synonymous(a: str, b: str) -> bool:
    """Do `a` and `b` (lemmas, or collocations of lemmas joined by spaces) share one of their
    common senses, or is one's sense directly a kind of the other's?"""
    if a == b:
        return False
    senses_a, senses_b = _senses(a), _senses(b)
    if senses_a & senses_b:
        return True
    return HYPERNYMS and bool(_parents(a) & senses_b or _parents(b) & senses_a)


def is_word(word: str) -> bool:
    """Is `word` an entry of WordNet (a word of the language, not a fragment of one)?"""
    return word in _table()[0]
