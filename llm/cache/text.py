"""Text normalisation for cache keys, and the lexical check a semantic match must pass.

Sentence embeddings are known to be nearly blind to exactly what makes two questions want
different answers: "What is the capital of France?" and "... of Germany?", "enable" and
"disable", "3.12" and "3.13", "support" and "do not support", "from A to B" and "from B to A"
all score 0.66-0.998 with all-MiniLM-L6-v2, above many true paraphrases (see
docs/caching.md). So a semantic hit needs the embedding *and* this check. Both questions are
first rewritten the same way (symbols, units, abbreviations and set phrases: llm/cache/lexicon.py),
their words reduced to lemmas (simplemma's English dictionary, shipped in its wheel) and a small
table of synonyms; acronyms and compounds are paired with their spelled-out words
(llm/cache/spelling.py). Then they must have the same numbers, negations, quoted or code spans and
direction, and no content word of one may stand where the other has a different one (an entity,
an attribute, an opposite operation). Words that only frame a question ("which city is",
"what is the process") are free; a content word that only one side adds is allowed only to a
closer embedding (`match`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import simplemma

from llm.cache.lexicon import (
    ABBREVIATIONS,
    CONTEXT,
    FRAMING,
    PHRASES,
    STOPWORDS,
    SYMBOLS,
    SYNONYMS,
)
from llm.cache.spelling import pair_spellings

_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?!.。？！]+$")
# A greeting or thanks around a question; inside it ("how do you say thanks") they are asked about.
_GREETING = re.compile(r"^(?:hi|hello|hey)(?: there)?\b[\s,!.]*")
_THANKS = re.compile(r"[\s,!.]*\b(?:thanks|thank you|thx)(?: in advance)?[\s!.]*$")


def normalise(text: str) -> str:
    """Unicode-compatible, case-folded, whitespace collapsed, no trailing ?/!/. — what the
    exact key hashes (so "How do I X?" and "how do  i x" are one question)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _SPACE.sub(" ", text).strip()
    return _TRAILING.sub("", text)


# --- The lexical check ---------------------------------------------------------------------

_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|“([^”]+)”|(?<!\w)'([^']+)'(?!\w)")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W_](?:[\w.+#'’]*[\w+#])?")
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "seventy": "70",
    "eighty": "80",
    "ninety": "90",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
}
_ROMAN = {r: str(i) for i, r in enumerate("ii iii iv v vi vii viii ix x xi xii".split(), 2)}
# "an inch" and "1 inch" ask the same: one is not compared as a number.
_UNCOMPARED_NUMBERS = {"1"}
_NEGATIONS = {"not", "no", "never", "without", "none", "nothing", "nobody", "neither", "nor"}
_CONTRACTIONS = {"can't": "can not", "cannot": "can not", "won't": "will not"}
# Words around which order carries meaning: "from A to B", "A into B", "A than B", "A vs B".
_DIRECTIONAL = {"to", "into", "from", "than", "vs", "versus", "onto", "in"}
# Function words that still set a direction: "round up" is not "round down".
_PARTICLES = {"up", "down", "above", "below", "before", "after", "more", "less", "least"}
_PARTICLES |= {"over", "under", "off", "out", "inside", "outside", "early", "late"}
_PHRASES = [(re.compile(rf"(?<![\w-]){pattern}(?![\w-])"), repl) for pattern, repl in PHRASES]
# Two forms of one word share most of their spelling: "summary"/"summarize", "open"/"opening".
_SHARED_PREFIX = 5
_SHARED_SHARE = 0.75


_NOT_PLURAL = frozenset({"ss", "us", "is", "os"})


@lru_cache(maxsize=65536)
def _lemma(word: str) -> str:
    """The dictionary form, lower case ("Fahrenheit" comes back capitalised); an unknown plural
    loses its s ("dicts")."""
    lemma = str(simplemma.lemmatize(word, lang="en")).casefold()
    if lemma == word and len(word) > 4 and word.endswith("s") and word[-2:] not in _NOT_PLURAL:
        return word[:-1]
    return lemma


@dataclass(frozen=True)
class Profile:
    """What a question asks about, as the lexical check compares it."""

    content: tuple[str, ...]  # compared words in order, repeats kept
    numbers: tuple[str, ...]
    negations: int
    quoted: tuple[str, ...]
    particles: frozenset[str]
    # (the content word before a directional word in its clause, the first content word after).
    directions: tuple[tuple[str, str], ...]
    words: tuple[str, ...]


def _canonical(word: str) -> str:
    """The word as compared: abbreviation spelled out, lemma, synonym group."""
    word = ABBREVIATIONS.get(word, word)
    if word in SYNONYMS:
        return SYNONYMS[word]
    lemma = _lemma(word)
    lemma = ABBREVIATIONS.get(lemma, lemma)
    return SYNONYMS.get(lemma, lemma)


def _rewrite(text: str) -> str:
    lowered = unicodedata.normalize("NFKC", text).casefold().replace("’", "'")
    for short, long in _CONTRACTIONS.items():
        lowered = lowered.replace(short, long)
    lowered = lowered.replace("n't", " not")
    lowered = _THANKS.sub("", _GREETING.sub("", lowered.strip()))
    for pattern, replacement in SYMBOLS:
        lowered = pattern.sub(replacement, lowered)
    lowered = _SPACE.sub(" ", lowered)
    for phrase, replacement in _PHRASES:
        lowered = phrase.sub(replacement, lowered)
    return lowered


@lru_cache(maxsize=4096)
def profile(text: str) -> Profile:
    text = unicodedata.normalize("NFKC", text)
    quoted = tuple(
        sorted(_SPACE.sub(" ", next(g for g in m.groups() if g)) for m in _QUOTED.finditer(text))
    )
    lowered = _rewrite(text)
    numbers: list[str] = _NUMBER.findall(lowered)
    words = [part for w in _WORD.findall(lowered) for part in w.rstrip(".").split("-") if part]
    numbers += [_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS]
    numbers += [_ROMAN[w] for w in words if w in _ROMAN]
    negations = sum(1 for w in words if w in _NEGATIONS)
    content: list[str] = []
    directions: list[tuple[str, str]] = []
    pending_direction = False
    for word in words:
        if word in _DIRECTIONAL:
            pending_direction = bool(content)
            continue
        if word in STOPWORDS or word in _NEGATIONS or word in _NUMBER_WORDS or word in _ROMAN:
            continue
        if _NUMBER.fullmatch(word):  # compared as numbers
            continue
        canonical = _canonical(word)
        if word in FRAMING or canonical in FRAMING or canonical in STOPWORDS:
            continue
        if pending_direction:
            directions.append((content[-1], canonical))
            pending_direction = False
        content.append(canonical)
    numbers = [n.replace(",", "") for n in numbers]
    return Profile(
        content=tuple(content),
        numbers=tuple(sorted(n for n in numbers if n not in _UNCOMPARED_NUMBERS)),
        negations=min(negations, 1),
        quoted=quoted,
        particles=frozenset(w for w in words if w in _PARTICLES),
        directions=tuple(directions),
        words=tuple(words),
    )


def _related(a: str, b: str) -> bool:
    """One word in two forms ("summary"/"summarize", "discover"/"discoverer")?"""
    if a == b:
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


def _reversed(a: Profile, b: Profile) -> bool:
    """Does `b` put around a directional word, in the other order, two things `a` relates?
    ("convert PDF to Word" / "convert Word to PDF", "10 USD in EUR" / "10 EUR in USD")."""
    return any(
        (after, before) in b.directions and before != after for before, after in a.directions
    )


_ARTICLES = frozenset({"a", "an", "the"})


def _swapped(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Is `b` exactly `a` with two words exchanged ("dog chases cat" / "cat chases dog")?
    Articles are left out first: "a crocodile … an alligator" swaps to "an alligator … a
    crocodile"."""
    a = tuple(word for word in a if word not in _ARTICLES)
    b = tuple(word for word in b if word not in _ARTICLES)
    if len(a) != len(b):
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return len(diff) == 2 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def _content_difference(a: Profile, b: Profile) -> tuple[list[str], list[str]]:
    """Content words of `a` that `b` lacks, and of `b` that `a` lacks (repeats count: "a kilo
    of steel or a kilo of feathers" is not "a pound of steel or a kilo of feathers"). When only
    one side adds words, a repeat ("I forgot my password, how do I reset it") and words saying
    where the question is asked from ("my account") do not count."""
    only_a, only_b = _unmatched(a.content, b.content), _unmatched(b.content, a.content)
    if only_a or only_b:
        only_a, only_b = pair_spellings(
            only_a, only_b, a.words, b.words, a.content, b.content, _canonical
        )
    if only_a and only_b:
        return only_a, only_b
    return (
        [w for w in only_a if w not in CONTEXT and w not in b.content],
        [w for w in only_b if w not in CONTEXT and w not in a.content],
    )


def same_question(a: Profile, b: Profile) -> str:
    """ "" when `a` and `b` ask about the same things, "added" when one asks about more, else
    why they differ (for logs and the benchmark)."""
    if a.numbers != b.numbers:
        return "numbers"
    if a.negations != b.negations:
        return "negation"
    if a.quoted != b.quoted:
        return "quoted"
    if a.particles != b.particles:
        return "particles"
    if _reversed(a, b) or _swapped(a.words, b.words):
        return "direction"
    only_a, only_b = _content_difference(a, b)
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


def match(a: Profile, b: Profile, similarity: float, threshold: float) -> str:
    """ "" when the stored question `b` may answer `a` at this cosine similarity, else why
    not ("similarity", or what same_question found)."""
    if similarity < threshold:
        return "similarity"
    reason = same_question(a, b)
    if reason == "added":
        only_a, only_b = _content_difference(a, b)
        if len(only_a) + len(only_b) <= ADDED_MAX_WORDS and similarity >= threshold + ADDED_MARGIN:
            return ""
    return reason
