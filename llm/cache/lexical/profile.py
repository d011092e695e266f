"""What a question asks about, as the lexical check compares it: its content words as lemmas
and synonym groups, and the numbers, negations, quotes, particles, directions, roles and
quantities that embeddings barely see."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import simplemma

from llm.cache.everyday import OBJECT_PRONOUNS, PARTICLES, PHRASAL_VERBS
from llm.cache.lexical.asked import AUDIENCES, after_for, asks_purpose, words_as_words
from llm.cache.lexical.rewrite import SPACE, rewrite
from llm.cache.lexicon import ABBREVIATIONS, FRAMING, STOPWORDS, SYNONYMS
from llm.cache.synonyms import is_word

_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|“([^”]+)”|(?<!\w)'([^']+)'(?!\w)")
# A minus sign before a number makes it another number ("the cube of -2"), but not a hyphen
# after a word or a number ("covid-19", "2-3 days", "10-4").
_NUMBER = re.compile(r"(?:(?<![\w.,)-])-)?\d+(?:[.,]\d+)*")
WORD = re.compile(r"[^\W_](?:[\w.+#'’]*[\w+#])?")
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
_DETERMINERS = frozenset("the my your our his her their its these those this that of".split())
_QUANTITIES |= {"every": "all", "each": "each", "both": "both", "many": "many", "few": "few"}
_QUANTITIES |= {"some": "some", "any": "some", "several": "some", "multiple": "some"}
# Function words that still set a direction: "round up" is not "round down".
_PARTICLES = {"up", "down", "above", "below", "before", "after", "more", "less", "least"}
_PARTICLES |= {"over", "under", "off", "out", "inside", "outside", "early", "late"}

_NOT_PLURAL = frozenset({"ss", "us", "is", "os"})
_VOWELS = frozenset("aeiouy")


def letters_only(word: str) -> bool:
    """Is `word` without a vowel, so an acronym read letter by letter ("http", "https", "sftp")?
    Such a word is neither a plural of a shorter one ("https" is not "http"s) nor a typo of
    one: its letters each stand for a word."""
    return not _VOWELS.intersection(word)


# A place noun in "the city of X" names a narrower place than X ("the city of London" is not
# London, "the county of York" not York): compared as content there, framing elsewhere ("which
# city is the capital of France").
_SCOPES = frozenset("city county state province borough district region town municipality".split())
# Who does what a question asks: "do I pay" and "do my parents pay" ask about other people. The
# subject is the word after the auxiliary that opens the question; "you" and "one" are anyone.
_OPENING_AUXILIARIES = frozenset("do does did can could should will would may must am".split())
_QUESTION_WORDS = frozenset("how what where when why which who".split())
_ANSWER_KINDS = {"when": "when", "where": "where", "who": "who", "whom": "who", "why": "why"}
# "how" names a kind of answer by the word after it: a way ("how do cats purr" is not "why do
# cats purr") after an auxiliary or "to"; an amount ("how many people died" is not "why did so
# many people die") before these.
_HOW_AMOUNT = frozenset("many much long old far often big tall fast heavy".split())
_HOW_WAY = _OPENING_AUXILIARIES | frozenset("to is are was were".split())
# The tense of the auxiliary opening a question ("who was" / "who is the president", "did" /
# "will the bill pass"): "have" goes with the past ("has my parcel been delivered" is "was my
# parcel delivered"), "going to" with the future.
_TENSES = {
    **dict.fromkeys("did was were had has have".split(), "past"),
    **dict.fromkeys("do does is are am".split(), "present"),
    **dict.fromkeys("will shall".split(), "future"),
}
_SPEAKERS = frozenset({"i", "we"})
_OTHERS = frozenset("my our his her their he she they".split())
# A form of "be" opening the question names its person only with a pronoun.
_OPENING_BE = frozenset("is are was were".split())
_PERSONS = frozenset("he she they".split())


@lru_cache(maxsize=65536)
def lemma_of(word: str) -> str:
    """The dictionary form, lower case ("Fahrenheit" comes back capitalised); an unknown plural
    loses its s ("dicts")."""
    lemma = str(simplemma.lemmatize(word, lang="en")).casefold()
    if lemma.endswith("ll") and lemma != word and not is_word(lemma) and is_word(lemma[:-1]):
        return lemma[:-1]  # British spelling: "travelling", "labelled" ("travell")
    if (
        lemma == word
        and len(word) > 4
        and word.endswith("s")
        and word[-2:] not in _NOT_PLURAL
        and not letters_only(word[:-1])
    ):
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
    # "speaker" (I, we), "other" (my parents, they) or "" for the subject of the question's
    # opening auxiliary ("how do I pay" / "do my parents pay").
    subject: str = ""
    # The kind of answer wanted ("when", "where", "who", "why", "amount", "way", "whole");
    # "what", "how" and "which" can ask any of them ("what time" is "when").
    asks: frozenset[str] = frozenset()
    # "past", "present" or "future": the tense of the question's opening auxiliary, "" if none.
    tense: str = ""
    # (lemma, "most"/"more") of adjectives said as superlatives or comparatives.
    degrees: tuple[tuple[str, str], ...] = ()
    # The question as asked: what the cross-encoder judge reads (llm/cache/judge.py).
    text: str = ""
    # (up to two content words before "to" / "into", up to two after): the phrases a conversion
    # or a move relates ("a fan oven to a conventional oven").
    spans: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()


def canonical_of(word: str) -> str:
    """The word as compared: abbreviation spelled out, lemma, synonym group."""
    if word in ABBREVIATIONS:  # already a dictionary form (simplemma makes "ml" "millileter")
        word = ABBREVIATIONS[word]
        return SYNONYMS.get(word, word)
    if word in SYNONYMS:
        return SYNONYMS[word]
    lemma = lemma_of(word)
    lemma = ABBREVIATIONS.get(lemma, lemma)
    return SYNONYMS.get(lemma, lemma)


def _phrasal_verbs(words: list[str]) -> list[str]:
    """A verb and its particle as one word where WordNet has them as one ("call off" is
    "cancel", "shut down" is "turn off") or where they mean one plain verb (PHRASAL_VERBS:
    "hand in" is "submit"), also with an object pronoun between them ("throw it away"); the
    particle then sets no direction of its own, and "call off" is still not "call"."""
    out: list[str] = []
    for word in words:
        if out and (word in _PARTICLES or word in PARTICLES):
            # The verb is the word before the particle, or before an object pronoun there.
            at = len(out) - 2 if len(out) > 1 and out[-1] in OBJECT_PRONOUNS else len(out) - 1
            phrase = f"{lemma_of(out[at])} {word}"
            if phrase in PHRASAL_VERBS:
                out[at] = PHRASAL_VERBS[phrase]
                continue
            if word in _PARTICLES and is_word(phrase):
                out[at] = phrase
                continue
        out.append(word)
    return out


@lru_cache(maxsize=4096)
def profile(text: str) -> Profile:
    """What `text` asks about, as the rule families compare it (cached: the index checks each
    stored question against many asked ones)."""
    asked = text
    text = unicodedata.normalize("NFKC", text)
    quoted = tuple(
        sorted(SPACE.sub(" ", next(g for g in m.groups() if g)) for m in _QUOTED.finditer(text))
    )
    lowered = rewrite(text)
    numbers: list[str] = _NUMBER.findall(lowered)
    words = _phrasal_verbs(
        [part for w in WORD.findall(lowered) for part in w.rstrip(".").split("-") if part]
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
    splits: list[int] = []
    pending_split = False
    scoped = {
        i
        for i in range(1, len(words) - 1)
        if words[i] in _SCOPES and (words[i - 1], words[i + 1]) == ("the", "of")
    }
    # "New York City", "Mexico City": a place noun after a name narrows it as "the city of"
    # does ("the capital city of Peru" is still the capital).
    scoped |= {
        i
        for i in range(1, len(words))
        if words[i] in _SCOPES
        and words[i - 1] not in STOPWORDS
        and words[i - 1] not in _QUESTION_WORDS
        and words[i - 1]
        not in ("capital", "biggest", "largest", "smallest", "big", "large", "small")
    }
    for i, (previous, word) in enumerate(zip(["", *words], words, strict=False)):
        if word in _REFERENCES or (previous, word) == ("ahead", "of"):
            pending_role = f"reference {previous if word == 'of' else word}"
        if word == "to" and previous in _QUESTION_WORDS:
            continue  # "how to", "where to": an infinitive, not a target
        if word in _DIRECTIONAL or (previous, word) == ("out", "of"):
            pending_direction = bool(content) and word in _DIRECTIONAL
            pending_split = word in ("to", "into")
            pending_role = _ROLES.get(word, "source" if word == "of" else pending_role)
            continue
        if word in STOPWORDS or word in _NEGATIONS or word in _NUMBER_WORDS or word in _ROMAN:
            continue
        if _NUMBER.fullmatch(word):  # compared as numbers
            continue
        canonical = canonical_of(word)
        if canonical in AUDIENCES and after_for(words, i):
            canonical = f"for {canonical}"  # "the premium plan for teams" is another plan
        if (word in FRAMING or canonical in FRAMING or canonical in STOPWORDS) and i not in scoped:
            continue
        if pending_direction:
            directions.append((content[-1], canonical))
            if pending_split:
                splits.append(len(content))
            pending_direction = False
        if pending_role:
            roles.append((pending_role, canonical))
            pending_role = ""
        content.append(canonical)
        if (lemma := lemma_of(word)) != canonical:
            sources.add((canonical, lemma))
    numbers = [n.replace(",", "") for n in numbers]
    quoted = words_as_words(words, quoted)
    return Profile(
        content=tuple(content),
        numbers=tuple(sorted(n for n in numbers if n not in _UNCOMPARED_NUMBERS)),
        negations=negations,
        quoted=quoted,
        particles=frozenset(w for w in words if w in _PARTICLES),
        directions=tuple(directions),
        words=tuple(words),
        sources=tuple(sorted(sources)),
        roles=tuple(roles),
        quantities=_quantities(words),
        subject=_subject(words),
        asks=_asks(words),
        tense=_tense(words),
        degrees=_degrees(words),
        text=asked,
        spans=tuple(
            (tuple(content[max(0, at - 2) : at]), tuple(content[at : at + 2])) for at in splits
        ),
    )


def _asks(words: list[str]) -> frozenset[str]:
    """The question words that name the kind of answer ("when did the Titanic sink" / "where
    did the Titanic sink"): the first question word, and one after "and" ("who painted it and
    when"). A later one joins a clause and asks nothing ("what does it mean when ...")."""
    at = next((i for i, word in enumerate(words) if word in _QUESTION_WORDS), -1)
    joined = [i + 1 for i, word in enumerate(words[:-1]) if word in ("and", "or")]
    return frozenset(_answer_kind(words, i) for i in [at, *joined] if i >= 0) - {""}


def _answer_kind(words: list[str], at: int) -> str:
    word = words[at]
    after = words[at + 1] if at + 1 < len(words) else ""
    if word == "what" and at > 1 and words[at - 1] == "of":
        return "whole"  # "80 is 15% of what number" asks for the whole, not the part
    if word == "what" and at == 0 and asks_purpose(words):
        return "why"  # "what is a router's password used for" / "where is the password"
    if word == "what" and after in ("time", "date", "day", "year"):
        return "when"  # "what time does the parade start" / "where does it start"
    if word != "how":
        return _ANSWER_KINDS.get(word, "")
    return "amount" if after in _HOW_AMOUNT else "way" if after in _HOW_WAY else ""


def _tense(words: list[str]) -> str:
    """The tense of the auxiliary that opens the question, after its question word ("when did
    the store open"), or of "going to" anywhere in it; "" when it opens with neither."""
    if "going" in words and "to" in words[words.index("going") :]:
        return "future"
    start = 1 if words[:1] and words[0] in _QUESTION_WORDS else 0
    if start == 1 and len(words) > 2 and words[1] in _HOW_AMOUNT:
        start = 2  # "how many people died", "how long did it take"
    if start >= len(words):
        return ""
    word = words[start]
    if word not in _TENSES and start == 1 and words[0] in ("who", "what", "which"):
        # A verb right after "who" or "what" carries the tense: "who coached" / "who coaches
        # the Lakers", "what happened" / "what happens".
        if lemma_of(word) != word and word.endswith("ed"):
            return "past"
        if lemma_of(word) != word and word.endswith("s"):
            return "present"
    if word not in _TENSES and start == 1 and words[0] in ("what", "which", "whose"):
        # The auxiliary after the question word's noun: "what time did" / "will the match
        # start", "what side effects will I have" / "what were the side effects I had".
        for later in words[2:4]:
            if later in _TENSES:
                return _TENSES[later]
    return _TENSES.get(word, "")


def _degrees(words: list[str]) -> tuple[tuple[str, str], ...]:
    """(lemma, "most" or "more") of each adjective said as a superlative or a comparative:
    "the cheapest flight" is not "a cheap flight", "faster" not "fast"."""
    out = []
    for word in words:
        lemma = lemma_of(word)
        if lemma != word and word.endswith("est") and lemma[:3] == word[:3]:
            out.append((lemma, "most"))
        elif lemma != word and word.endswith("er") and lemma[:3] == word[:3]:
            out.append((lemma, "more"))
    return tuple(sorted(set(out)))


def _subject(words: list[str]) -> str:
    """Who the auxiliary opening the question (after its question word) asks about: "speaker"
    ("how do I", "can we"), "other" ("do my parents", "can they") or "" (anyone, or no such
    opening: "how to", "do you")."""
    start = 1 if words[:1] and words[0] in _QUESTION_WORDS else 0
    if start == 1 and len(words) > 3 and words[1] in _HOW_AMOUNT:
        # "how much notice do I give" / "how much notice does my employer give": the auxiliary
        # after the amount's noun (at most two words) opens the question.
        start = next(
            (i for i in range(2, min(5, len(words) - 1)) if words[i] in _OPENING_AUXILIARIES),
            start,
        )
    if len(words) < start + 2:
        return ""
    if words[start] in _OPENING_BE:
        # "are we allowed to" / "is he allowed to"; "is my dog overweight" asks about a thing.
        subject = words[start + 1]
        return "speaker" if subject in _SPEAKERS else "other" if subject in _PERSONS else ""
    if words[start] not in _OPENING_AUXILIARIES:
        return ""  # "how to do my taxes": "do" is the verb there
    if words[start + 1] in _SPEAKERS:
        return "speaker"
    return "other" if words[start + 1] in _OTHERS else ""


def _quantities(words: list[str]) -> tuple[tuple[str, str, bool], ...]:
    """What each quantity word counts: "one mailing list" is ("one", "list", False), "all
    mailing lists" ("all", "list", True); the counted noun is the last word of the run of
    content words after it, past a determiner or "of" ("all my photos", "one of the founders")."""
    out = []
    for i, word in enumerate(words):
        if word not in _QUANTITIES:
            continue
        run: list[str] = []
        for following in words[i + 1 :]:
            if not run and following in _DETERMINERS:
                continue
            if following in STOPWORDS or following in _DIRECTIONAL or following in _QUANTITIES:
                break
            run.append(following)
        skipped = i + 1 < len(words) and words[i + 1] in _DETERMINERS
        if run and skipped and _QUANTITIES[word] == "all" and lemma_of(run[-1]) == run[-1]:
            run = []  # "all my data" is "my data"; "all my photos" is not "a photo"
        if run:
            noun = run[-1]
            out.append((_QUANTITIES[word], lemma_of(noun), lemma_of(noun) != noun))
        else:
            out.append((_QUANTITIES[word], "", False))
    return tuple(out)
