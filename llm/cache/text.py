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
from llm.cache.synonyms import is_word, synonymous

_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?!.。？！]+$")
# A greeting or thanks around a question; inside it ("how do you say thanks") they are asked about.
_GREETING = re.compile(
    r"^(?:(?:hi|hello|hey|hiya|howdy|yo|greetings)"
    r"(?: there| all| everyone| folks| guys| team)?\b[\s,!.]*|"
    # "morning" alone is a greeting only with its punctuation: "morning sickness" is asked about.
    r"(?:good )?(?:morning|afternoon|evening)(?: all| everyone| folks| team)?[,!.]+\s*)"
)
_THANKS = re.compile(
    r"[\s,!.]*\b(?:thanks|thank you|thx|cheers|many thanks|much appreciated|ta)"
    r"(?: so much| a lot| in advance)?[\s!.]*$"
)
# Chatty framing before the question itself ("quick question: ...", "could you tell me ...",
# "I was wondering ..."): removed, repeatedly, only at the start.
_CHATTY = re.compile(
    r"^(?:(?:(?:a |one )?quick question|just (?:a question|curious|wondering))\b[\s,:;!.-]*|"
    r"(?:sorry|excuse me|so|ok(?:ay)?|um+|well)[,:;!.-]+\s*|"
    r"(?:i was|i am|i'm|i'd been|just) wondering(?: if| whether)?\b[\s,:]*|"
    r"i wonder(?: if| whether)?\b[\s,:]*|"
    r"(?:(?:please|kindly) )?(?:can|could|would|will) (?:you|someone|anyone) "
    r"(?:please |kindly )?(?:tell|show|explain to|let) me(?: know)?\b[\s,:]*|"
    r"(?:please )?(?:tell|show|explain to) me\b[\s,:]*|"
    r"(?:do|does) (?:you|anyone|anybody) (?:happen to )?know\b[\s,:]*|"
    r"(?:i'd|i would|i) (?:like|love|want|need) to (?:know|ask|find out|understand)\b[\s,:]*|"
    r"any idea\b[\s,:]*|(?:i have|i've got) a question\b[\s,:;-]*|"
    r"quick one[\s,:;!.-]+|just (?:checking|asking)[\s,:;!.-]+|"
    r"sorry (?:if this is|for) (?:a|the) (?:silly|stupid|dumb|basic|newbie) question,? but\b[\s,]*|"
    r"sorry to (?:bother|trouble) you,? but\b[\s,]*)"
)


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
_DIRECTIONAL = {"to", "into", "from", "than", "vs", "versus", "onto", "in", "towards", "toward"}
# What a directional word marks, whatever the word: "to savings" and "into savings" both name
# where something goes, "from checking" and "out of checking" where it comes from.
_ROLES = {"to": "target", "into": "target", "onto": "target", "towards": "target"}
_ROLES |= {"toward": "target", "from": "source"}
# Words that compare a thing with a reference named after them: "London is ahead of New York",
# "ahead of New York is London", "older than", "before", "below". A frame whose reference is on
# the other side's other argument compares the other way round.
_REFERENCES = {"than", "behind", "before", "after", "above", "below", "beyond"}
# Words that say how many of a thing are meant: "one list" is not "all lists". Words in one
# class say the same quantity ("each"/"every").
_QUANTITIES = {"one": "one", "single": "one", "all": "all", "entire": "all", "whole": "all"}
_QUANTITIES |= {"every": "all", "each": "each", "both": "both", "many": "many", "few": "few"}
_QUANTITIES |= {"some": "some", "any": "some", "several": "some", "multiple": "some"}
# Function words that still set a direction: "round up" is not "round down".
_PARTICLES = {"up", "down", "above", "below", "before", "after", "more", "less", "least"}
_PARTICLES |= {"over", "under", "off", "out", "inside", "outside", "early", "late"}
_PHRASES = [(re.compile(rf"(?<![\w-]){pattern}(?![\w-])"), repl) for pattern, repl in PHRASES]
# Two forms of one word share most of their spelling: "summary"/"summarize", "open"/"opening".
_SHARED_PREFIX = 5
_SHARED_SHARE = 0.75


_NOT_PLURAL = frozenset({"ss", "us", "is", "os"})
_TIME_UNITS = frozenset("second minute hour day week month year".split())


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
    # (compared word, the lemma it came from) where they differ: "stop" is compared as "cancel".
    sources: tuple[tuple[str, str], ...] = ()
    # ("source", "target" or "reference <word>", the first content word after the word that
    # marks it).
    roles: tuple[tuple[str, str], ...] = ()
    # (quantity class, the noun it counts as a lemma, whether that noun is said in the plural).
    quantities: tuple[tuple[str, str, bool], ...] = ()


def _canonical(word: str) -> str:
    """The word as compared: abbreviation spelled out, lemma, synonym group."""
    if word in ABBREVIATIONS:  # already a dictionary form (simplemma makes "ml" "millileter")
        word = ABBREVIATIONS[word]
        return SYNONYMS.get(word, word)
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
    while (unframed := _CHATTY.sub("", lowered, count=1)) != lowered:
        lowered = _GREETING.sub("", unframed)
    for pattern, replacement in SYMBOLS:
        lowered = pattern.sub(replacement, lowered)
    lowered = _SPACE.sub(" ", lowered)
    for phrase, replacement in _PHRASES:
        lowered = phrase.sub(replacement, lowered)
    return lowered


def _phrasal_verbs(words: list[str]) -> list[str]:
    """A verb and its particle as one word where WordNet has them as one ("call off" is
    "cancel", "shut down" is "turn off"); the particle then sets no direction of its own, and
    "call off" is still not "call"."""
    out: list[str] = []
    for word in words:
        if out and word in _PARTICLES and is_word(phrase := f"{_lemma(out[-1])} {word}"):
            out[-1] = phrase
        else:
            out.append(word)
    return out


@lru_cache(maxsize=4096)
def profile(text: str) -> Profile:
    text = unicodedata.normalize("NFKC", text)
    quoted = tuple(
        sorted(_SPACE.sub(" ", next(g for g in m.groups() if g)) for m in _QUOTED.finditer(text))
    )
    lowered = _rewrite(text)
    numbers: list[str] = _NUMBER.findall(lowered)
    words = _phrasal_verbs(
        [part for w in _WORD.findall(lowered) for part in w.rstrip(".").split("-") if part]
    )
    numbers += [_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS]
    numbers += [_ROMAN[w] for w in words if w in _ROMAN]
    negations = sum(1 for w in words if w in _NEGATIONS)
    content: list[str] = []
    sources: set[tuple[str, str]] = set()
    directions: list[tuple[str, str]] = []
    roles: list[tuple[str, str]] = []
    pending_direction = False
    pending_role = ""
    for previous, word in zip(["", *words], words, strict=False):
        if word in _REFERENCES or (previous, word) == ("ahead", "of"):
            pending_role = f"reference {previous if word == 'of' else word}"
        if word in _DIRECTIONAL or (previous, word) == ("out", "of"):
            pending_direction = bool(content) and word in _DIRECTIONAL
            pending_role = _ROLES.get(word, "source" if word == "of" else pending_role)
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
        if pending_role:
            roles.append((pending_role, canonical))
            pending_role = ""
        content.append(canonical)
        if (lemma := _lemma(word)) != canonical:
            sources.add((canonical, lemma))
    numbers = [n.replace(",", "") for n in numbers]
    return Profile(
        content=tuple(content),
        numbers=tuple(sorted(n for n in numbers if n not in _UNCOMPARED_NUMBERS)),
        negations=min(negations, 1),
        quoted=quoted,
        particles=frozenset(w for w in words if w in _PARTICLES),
        directions=tuple(directions),
        words=tuple(words),
        sources=tuple(sorted(sources)),
        roles=tuple(roles),
        quantities=_quantities(words),
    )


def _quantities(words: list[str]) -> tuple[tuple[str, str, bool], ...]:
    """What each quantity word counts: "one mailing list" is ("one", "list", False), "all
    mailing lists" ("all", "list", True); the counted noun is the last word of the run of
    content words after it."""
    out = []
    for i, word in enumerate(words):
        if word not in _QUANTITIES:
            continue
        run = []
        for following in words[i + 1 :]:
            if following in STOPWORDS or following in _DIRECTIONAL or following in _QUANTITIES:
                break
            run.append(following)
        if run:
            noun = run[-1]
            out.append((_QUANTITIES[word], _lemma(noun), _lemma(noun) != noun))
        else:
            out.append((_QUANTITIES[word], "", False))
    return tuple(out)


def _other_quantity(a: Profile, b: Profile) -> bool:
    """Does `b` count a thing `a` counts otherwise? Two quantity words of different classes
    ("one" / "all"), or one side's "one" where the other says the noun in the plural, or its
    "all"/"both"/"many" where the other says the noun in the singular."""
    classes_a = {q for q, _, _ in a.quantities}
    classes_b = {q for q, _, _ in b.quantities}
    if classes_a and classes_b:
        return classes_a != classes_b
    counted, other = (a, b) if classes_a else (b, a)
    for quantity, noun, _ in counted.quantities:
        said = [_lemma(w) != w for w in other.words if noun and _lemma(w) == noun]
        if quantity == "one" and any(said):
            return True
        if quantity in {"all", "both", "many"} and said and not any(said):
            return True
    return False


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


def _reversed(a: Profile, b: Profile) -> bool:
    """Does `b` put around a directional word, in the other order, two things `a` relates?
    ("convert PDF to Word" / "convert Word to PDF", "10 USD in EUR" / "10 EUR in USD"), make
    the source of a move its target ("from savings to checking" / "from checking into
    savings", whatever words mark them), or compare with the reference the other way round
    ("how far ahead of New York is London" / "how far is New York ahead of London")?"""
    if any((after, before) in b.directions and before != after for before, after in a.directions):
        return True
    flip = {"source": "target", "target": "source"}
    if any((flip.get(role), word) in b.roles for role, word in a.roles):
        return True
    return any(
        role == other_role and word != other and word in b.content and other in a.content
        for role, word in a.roles
        if role.startswith("reference")
        for other_role, other in b.roles
    )


_ARTICLES = frozenset({"a", "an", "the"})
# A verb moved in an embedded question changes nothing: "what is Docker" / "(tell me) what
# Docker is", "is it" / "it is".
_AUXILIARIES = frozenset("is are was were do does did can could will would should has have".split())


def _swapped(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Is `b` exactly `a` with two words or word groups exchanged around the same words ("dog
    chases cat" / "cat chases dog", "ahead of New York is London" / "ahead of London is New
    York"), not counting an auxiliary verb moved?
    Articles are left out first: "a crocodile … an alligator" swaps to "an alligator … a
    crocodile"."""
    a = tuple(word for word in a if word not in _ARTICLES)
    b = tuple(word for word in b if word not in _ARTICLES)
    if len(a) != len(b) or a == b:
        return False
    start = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    end = len(a) - next(i for i, (x, y) in enumerate(zip(a[::-1], b[::-1], strict=True)) if x != y)
    seg_a, seg_b = a[start:end], b[start:end]
    for first in range(1, len(seg_a)):
        for last in range(1, len(seg_a) - first + 1):
            one, middle, two = seg_a[:first], seg_a[first:-last], seg_a[-last:]
            if seg_b != two + middle + one or one == two:
                continue
            if len(one) + len(two) > 2 and not middle:
                continue  # "sort a list in Python" / "in Python sort a list": the same
            if any(set(span) <= _AUXILIARIES | STOPWORDS for span in (one, two)):
                continue
            return True
    return False


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


def _quoted_alike(a: Profile, b: Profile) -> bool:
    """Is every span quoted on one side only written, unquoted, on the other ("what is 'cat'
    in Spanish" / "how do you say cat in Spanish")?"""

    def written(span: str, words: tuple[str, ...]) -> bool:
        parts = tuple(_WORD.findall(span.casefold()))
        return bool(parts) and any(
            words[i : i + len(parts)] == parts for i in range(len(words) - len(parts) + 1)
        )

    return all(written(span, b.words) for span in set(a.quoted) - set(b.quoted)) and all(
        written(span, a.words) for span in set(b.quoted) - set(a.quoted)
    )


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
    if _reversed(a, b) or _swapped(a.words, b.words):
        return "direction"
    if _other_quantity(a, b):
        return "quantity"
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


# The embedding does not know most abbreviations and acronyms: "PW" and "password", "GDPR"
# and "General Data Protection Regulation" score 0.35-0.45. Two questions that differ only in
# that spelling (every content word paired, the same numbers, negation, quotes and direction)
# may match this much below the threshold; every other pair is bounded by the threshold.
LEXICAL_MARGIN = 0.3


def floor(threshold: float) -> float:
    """The lowest similarity at which `match` can accept a candidate."""
    return threshold - LEXICAL_MARGIN


def _spelled_out(a: Profile, b: Profile) -> bool:
    """Does one side write as an abbreviation or acronym (or a compound) what the other spells
    out? Only asked of two questions whose content words all pair."""
    if not (a.content and b.content):
        return False
    # Abbreviations of words the check compares ("pw", "mg"), not of framing ("pls", "u").
    short_a = {w for w in a.words if ABBREVIATIONS.get(w, w) != w and _canonical(w) in a.content}
    short_b = {w for w in b.words if ABBREVIATIONS.get(w, w) != w and _canonical(w) in b.content}
    if short_a ^ short_b:
        return True
    only_a, only_b = _unmatched(a.content, b.content), _unmatched(b.content, a.content)
    if not (only_a and only_b):
        return False
    # Paired by spelling alone (an acronym, a compound); a WordNet synonym is not a spelling: the
    # embedding knows "incorrect" / "wrong" and gets no margin for them.
    only_a, only_b = pair_spellings(
        only_a, only_b, a.words, b.words, a.content, b.content, _canonical
    )
    return not only_a and not only_b


def match(a: Profile, b: Profile, similarity: float, threshold: float) -> str:
    """ "" when the stored question `b` may answer `a` at this cosine similarity, else why
    not ("similarity", or what same_question found)."""
    if similarity < floor(threshold):
        return "similarity"
    reason = same_question(a, b)
    if similarity < threshold:
        return "" if not reason and _spelled_out(a, b) else "similarity"
    if reason == "added":
        only_a, only_b = _content_difference(a, b)
        if len(only_a) + len(only_b) <= ADDED_MAX_WORDS and similarity >= threshold + ADDED_MARGIN:
            return ""
    return reason
