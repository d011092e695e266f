"""Text normalisation for cache keys, and the lexical check a semantic match must pass.

Sentence embeddings are known to be nearly blind to exactly what makes two questions want
different answers: "What is the capital of France?" and "... of Germany?", "enable" and
"disable", "3.12" and "3.13", "support" and "do not support", "from A to B" and "from B to A"
all score 0.66-0.998 with all-MiniLM-L6-v2, above most true paraphrases (0.62-0.99; see
docs/caching.md). So a semantic hit needs the embedding *and* this check: both questions must
ask about the same things — the same content words up to inflection, a small table of
synonyms and filler, the same numbers, the same negations, the same quoted or code spans, in
the same direction. What remains free is wording, function words and word order.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?!.。？！]+$")


def normalise(text: str) -> str:
    """Unicode-compatible, case-folded, whitespace collapsed, no trailing ?/!/. — what the
    exact key hashes (so "How do I X?" and "how do  i x" are one question)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _SPACE.sub(" ", text).strip()
    return _TRAILING.sub("", text)


# --- The lexical check ---------------------------------------------------------------------

_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|“([^”]+)”|(?<!\w)'([^']+)'(?!\w)")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W_](?:[\w.+#'’-]*[\w+#])?")
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000"}
_NEGATIONS = {"not", "no", "never", "without", "none", "nothing", "nobody", "neither", "nor"}
_CONTRACTIONS = {"can't": "can not", "cannot": "can not", "won't": "will not"}
# Words around which order carries meaning: "from A to B", "A into B", "A than B", "A vs B".
_DIRECTIONAL = {"to", "into", "from", "than", "vs", "versus", "onto"}
# Function words that still set a direction: "round up" is not "round down".
_PARTICLES = {"up", "down", "above", "below", "before", "after", "more", "less", "most", "least"}
_PARTICLES |= {"over", "under", "off", "out", "inside", "outside", "early", "late"}

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been being
    below between both but by can could did do does doing down during each few for further had
    has have having he her here hers herself him himself his how i if in is it its itself just
    let me might more most must my myself of off on once only or other our ours ourselves out
    own same shall she should so some such that the their theirs them themselves then there
    these they this those through too under until up very was we were what when where which
    while who whom whose why will with would you your yours yourself yourselves please hi hello
    hey thanks thank ok okay i'm i've i'd it's what's how's where's who's there's that's let's
    im ive whats hows""".split()
)
# Words that frame a question without changing what it asks.
FILLER = frozenset(
    """explain explanation tell describe description define definition meaning mean means
    simple terms briefly exactly way ways best easiest easy command syntax possible help know
    want need like thing things example examples actually really basically someone something
    anyone anything quickly short give me also just kindly again go going
    method proper correct right""".split()
)
# Generic verbs and adjectives of questions, mapped to one stand-in. Entities never are.
_SYNONYMS = {
    **dict.fromkeys(["make", "create", "generate"], "create"),
    **dict.fromkeys(["delete", "remove", "erase"], "remove"),
    **dict.fromkeys(["quit", "exit", "leave"], "exit"),
    **dict.fromkeys(["change", "update", "modify", "edit", "switch", "alter"], "change"),
    **dict.fromkeys(["largest", "biggest", "greatest"], "largest"),
    **dict.fromkeys(["tallest", "highest"], "tallest"),
    **dict.fromkeys(["contact", "reach"], "contact"),
    **dict.fromkeys(["get", "obtain", "receive", "retrieve"], "get"),
    **dict.fromkeys(["see", "view", "display", "check", "find"], "see"),
    **dict.fromkeys(["kill", "terminate"], "kill"),
    **dict.fromkeys(["difference", "different", "differ", "compare", "comparison"], "differ"),
    **dict.fromkeys(["cost", "price", "pricing"], "price"),
    **dict.fromkeys(["fast", "faster", "speed", "quick"], "fast"),
    **dict.fromkeys(["learn", "study"], "learn"),
    **dict.fromkeys(["combine", "merge"], "merge"),
    **dict.fromkeys(["app", "application"], "app"),
    **dict.fromkeys(["organisation", "organization", "org"], "organisation"),
    **dict.fromkeys(["email", "e-mail"], "email"),
    **dict.fromkeys(["phone", "mobile", "smartphone", "cellphone"], "phone"),
    **dict.fromkeys(["author", "wrote", "write", "writer", "written"], "write"),
    **dict.fromkeys(["configure", "setup", "set-up"], "setup"),
    **dict.fromkeys(["dict", "dictionary"], "dict"),
    **dict.fromkeys(["int", "integer"], "int"),
    **dict.fromkeys(["str", "string"], "string"),
    **dict.fromkeys(["venv", "virtualenv"], "virtualenv"),
    **dict.fromkeys(["login", "signin"], "login"),
    **dict.fromkeys(["logout", "signout"], "logout"),
    **dict.fromkeys(["signup", "register"], "signup"),
    **dict.fromkeys(["refund", "reimburse"], "refund"),
}
_PHRASES = [
    (re.compile(r"\bset up\b"), "setup"),
    (re.compile(r"\bturn(?:ed|ing|s)? on\b"), "enable"),
    (re.compile(r"\bturn(?:ed|ing|s)? off\b"), "disable"),
    (re.compile(r"\b(?:log|sign)(?:ged|ging|s)? (?:in|into|on)\b"), "login"),
    (re.compile(r"\b(?:log|sign)(?:ged|ging|s)? (?:out|off)\b"), "logout"),
    (re.compile(r"\bsign(?:ed|ing|s)? up\b"), "signup"),
    (re.compile(r"\bmoney back\b"), "refund"),
    (re.compile(r"\buser name\b"), "username"),
    (re.compile(r"\bvirtual env(?:ironment)?s?\b"), "virtualenv"),
    (re.compile(r"\bget rid of\b"), "remove"),
    (re.compile(r"\bbig-?o\b"), "complexity"),
]


def _stem(word: str) -> str:
    """A light suffix stripper: enough for both sides of a comparison to agree."""
    if word.endswith("'s") or word.endswith("’s"):
        word = word[:-2]
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + keep
            break
    else:
        if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
            word = word[:-1]
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


@dataclass(frozen=True)
class Profile:
    """What a question asks about, as the lexical check compares it."""

    content: frozenset[str]
    numbers: tuple[str, ...]
    negations: int
    quoted: tuple[str, ...]
    particles: frozenset[str]
    # (content words before a directional word in its clause, the first content word after).
    directions: tuple[tuple[frozenset[str], str], ...]
    words: tuple[str, ...]


def _canonical(word: str) -> str:
    if word in _SYNONYMS:
        return _SYNONYMS[word]
    if word.endswith("s") and word[:-1] in _SYNONYMS:
        return _SYNONYMS[word[:-1]]
    stem = _stem(word)
    return _SYNONYMS.get(stem, stem)


def profile(text: str) -> Profile:
    text = unicodedata.normalize("NFKC", text)
    quoted = tuple(
        sorted(_SPACE.sub(" ", next(g for g in m.groups() if g)) for m in _QUOTED.finditer(text))
    )
    lowered = text.casefold().replace("’", "'")
    for short, long in _CONTRACTIONS.items():
        lowered = lowered.replace(short, long)
    lowered = lowered.replace("n't", " not")
    for pattern, replacement in _PHRASES:
        lowered = pattern.sub(replacement, lowered)
    numbers: list[str] = _NUMBER.findall(lowered)
    words = [w.rstrip(".") for w in _WORD.findall(lowered)]
    numbers += [_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS]
    negations = sum(1 for w in words if w in _NEGATIONS)
    content: list[str] = []
    directions: list[tuple[frozenset[str], str]] = []
    before: set[str] = set()  # content words of the clause so far
    pending_direction = False
    for word in words:
        if word in _DIRECTIONAL:
            pending_direction = bool(before)
            continue
        if word in STOPWORDS or word in FILLER or word in _NEGATIONS or word in _NUMBER_WORDS:
            continue
        if _NUMBER.fullmatch(word):  # compared as numbers
            continue
        canonical = _canonical(word)
        if canonical in FILLER:
            continue
        if pending_direction:
            directions.append((frozenset(before), canonical))
            pending_direction = False
        content.append(canonical)
        before.add(canonical)
    return Profile(
        content=frozenset(content),
        numbers=tuple(sorted(Counter(n.replace(",", "") for n in numbers).elements())),
        negations=min(negations, 1),
        quoted=quoted,
        particles=frozenset(w for w in words if w in _PARTICLES),
        directions=tuple(directions),
        words=tuple(words),
    )


def _reversed(a: Profile, b: Profile) -> bool:
    """Does `b` put around a directional word, in the other order, two things `a` relates?
    ("convert PDF to Word" / "convert Word to PDF", "Rust faster than Go" / "Go ... Rust")."""
    for a_before, a_after in a.directions:
        for b_before, b_after in b.directions:
            if a_after in b_before and b_after in a_before and a_after != b_after:
                return True
    return False


def _swapped(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Is `b` exactly `a` with two words exchanged ("dog chases cat" / "cat chases dog")?"""
    if len(a) != len(b):
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return len(diff) == 2 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def same_question(a: Profile, b: Profile) -> str:
    """ "" when `a` and `b` may share an answer, else why not (for logs and the benchmark)."""
    if a.numbers != b.numbers:
        return "numbers"
    if a.negations != b.negations:
        return "negation"
    if a.quoted != b.quoted:
        return "quoted"
    if a.particles != b.particles:
        return "particles"
    if _reversed(a, b) or _reversed(b, a) or _swapped(a.words, b.words):
        return "direction"
    if a.content != b.content:
        return "content"
    return ""
