"""How both questions are written before they are compared: `normalise` for the exact key, and
`rewrite` for the lexical check, which also drops greetings, thanks and chatty framing and spells
symbols, contractions and set phrases one way (llm/cache/lexicon.py)."""

from __future__ import annotations

import re
import unicodedata

from llm.cache.everyday import EVERYDAY_PHRASES, WRITTEN_FIRST
from llm.cache.lexicon import PHRASES, SYMBOLS

SPACE = re.compile(r"\s+")
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
    r"^(?:(?:(?:a |one )?quick (?:question|q|qn)|just (?:a question|curious|wondering))"
    r"\b[\s,:;!.-]*|"
    r"(?:sorry|excuse me|so|ok(?:ay)?|um+|well)[,:;!.-]+\s*|"
    # Hesitations and a leading "so" or "like" before the question ("um so like how do I").
    r"(?:u[hm]+|erm+|hmm+|lol|lmao|haha)\b[\s,:;!.-]*|"
    r"(?:so|like)[\s,]+(?=(?:(?:so|like)[\s,]+)*(?:how|what|where|when|why|which|who|can|do|does"
    r"|is|are)\b)|"
    r"(?:i was|i am|i'm|i'd been|just) wondering(?: if| whether)?\b[\s,:]*|"
    r"i wonder(?: if| whether)?\b[\s,:]*|"
    r"(?:(?:please|kindly) )?(?:can|could|would|will) (?:you|someone|anyone) "
    r"(?:please |kindly )?(?:tell|show|explain to|let) me(?: know)?\b[\s,:]*|"
    r"(?:please )?(?:tell|show|explain to) me\b[\s,:]*|"
    r"(?:(?:can|could) you )?help me (?:understand|figure out|work out)\b[\s,:]*|"
    r"(?:do|does) (?:you|anyone|anybody) (?:happen to )?know\b[\s,:]*|"
    r"(?:i'd|i would|i) (?:like|love|want|need) to (?:know|ask|find out|understand)\b[\s,:]*|"
    r"any idea\b[\s,:]*|"
    r"(?:i have|i've got|i have got) a(?: quick)? question\b(?:,? if you do not mind)?[\s,:;.!-]*|"
    r"(?:one more|another) (?:thing|question)\b[\s,:;.!-]+|"
    r"i hope (?:this|that|it) is not (?:a |too )?(?:weird|silly|stupid|dumb|basic|strange|odd)"
    r"(?: question)?,? but\b[\s,]*|"
    r"i hope (?:you|someone) can help(?: me)?(?: out)?(?: with this(?: one)?)?[\s,:;.!-]+|"
    r"(?:can|could|would) (?:you|someone|anyone) (?:please )?help(?: me)?(?: out)?"
    r"(?: with something| with this)?[\s?,:;.!-]+(?=(?:how|what|where|when|why|which|who|can"
    r"|do|does|is|are)\b)|"
    r"quick one[\s,:;!.-]+|just (?:checking|asking)[\s,:;!.-]+|"
    r"sorry (?:if this is|for) (?:a|the) (?:silly|stupid|dumb|basic|newbie) question,? but\b[\s,]*|"
    r"sorry to (?:bother|trouble) you,? but\b[\s,]*)"
)

# A lead-in of a few words that say nothing about the question, set off by a comma, colon or
# dash before it ("thanks in advance - what is ...", "out of curiosity, why ...", "dear support
# team, how ...", "honestly I have no idea, what does ... mean"): dropped only when every word
# of it is one of these, so a lead-in that narrows the question ("in the uk, how do I ...", "for
# a 5 year old, how much ...") stays.
_LEAD_IN_WORDS = frozenset(
    """a an the i i'm im am is it it's its me my you your we us our this that so ok okay just
    really honestly seriously genuinely basically anyway hey hi hello dear all team support
    folks guys everyone thanks thank in advance please pls if not too much trouble bother
    question quick out of curiosity curious wondering idea no have got need want would like to
    know find figure trying try asap urgent urgently help omg wow hmm um well right oh
    sorry silly stupid dumb random do mind asking ask""".split()
)
_LEAD_IN = re.compile(
    r"^((?:[\w']+[\s,]+){0,7}?[\w']+)\s*[,:;–—-]+\s+"
    r"(?=(?:how|what|where|when|why|which|who|whose|can|could|do|does|did|is|are|was|were|should"
    r"|will|would|any|tips|best)\b)"
)
# Exclamations a question starts with, without punctuation ("omg how do I unsend an email").
_EXCLAIMED = re.compile(
    r"^(?:omg|wow|argh|ugh|help|pls|please)\s+(?=(?:how|what|where|when|why|can)\b)"
)


def _without_lead_in(text: str) -> str:
    match = _LEAD_IN.match(text)
    if match and all(word in _LEAD_IN_WORDS for word in re.findall(r"[\w']+", match[1])):
        return text[match.end() :]
    return _EXCLAIMED.sub("", text)


_CONTRACTIONS = {"can't": "can not", "cannot": "can not", "won't": "will not"}
# Contractions typed without their apostrophe ("dont", "wont", "isnt"), and pronouns contracted
# with a verb ("i'm", "it's", "you're"): written out, so a quoted "I am" is the unquoted "i'm".
_NO_APOSTROPHE = re.compile(
    r"\b(do|does|did|is|are|was|were|have|has|had|would|should|could|ca|wo)nt\b"
)
_UNCONTRACTED = {"ca": "can", "wo": "will"}
_PRONOUN_VERB = re.compile(
    r"\b(i|you|we|they|he|she|it|that|what|where|who|how|there)'(m|re|s|ve|ll)\b"
)
_VERBS = {"m": "am", "re": "are", "s": "is", "ve": "have", "ll": "will"}
# What follows "2" / "4" read as "to" / "for": a word, or "a" / "an" but not before a stretch of
# time ("2 a day" is a number).
_WORD_AFTER = r"(?:[a-z]{2,}|an?\b(?! (?:day|night|week|month|year|hour|minute|second|time)s?\b))"
# Chat spellings of framing words: "how 2 ...", "when r u ...", "thru".
_CHAT = [
    (re.compile(r"\bhow 2\b"), "how to"),
    (re.compile(r"(?<![\w-])r(?= (?:u|you|ur|your|my|the|we|they|these|those)\b)"), "are"),
    (re.compile(r"(?<![\w-])u(?![\w-])"), "you"),
    (re.compile(r"(?<![\w-])ur(?![\w-])"), "your"),
    (re.compile(r"\byou (?:guys|all|folks|people)\b"), "you"),
    (re.compile(r"\bthru\b"), "through"),
    (re.compile(r"\bwats\b"), "what is"),
    (re.compile(r"\bwat\b"), "what"),
    (re.compile(r"\bb4\b"), "before"),
    # "2" and "4" for "to" and "for" between words ("how long 2 cook rice", "tips 4 saving"):
    # only after words that take them and before a word, so "2 cups" or "4 people" stay numbers.
    (
        re.compile(
            r"\b(long|way|ways|how|going|trying|able|ok|okay|safe"
            rf"|best|easiest|possible|allowed) 2 (?={_WORD_AFTER})"
        ),
        r"\1 to ",
    ),
    (
        re.compile(
            r"\b(tips|ideas|recipes?|good|ready|time|looking|up|apply|gift|present|way|best"
            r"|budget|normal|warm|hot|cold|safe|ok|okay|enough|healthy|suitable)"
            rf" 4 (?={_WORD_AFTER})"
        ),
        r"\1 for ",
    ),
]
# Filler a casual question ends with: "..., lol", "... help", "... any ideas?", "... pls".
_TRAILING_FILLER = re.compile(
    r"[\s,!.?]*\b(?:lol|lmao|haha|pls|plz|please|help|any ideas|anyone|thoughts)[\s?!.]*$"
)
# Abbreviations written out first: "how much paint for 200 sq ft" is then read as a conversion
# like "... 200 square feet".
_PHRASES = [
    (re.compile(rf"(?<![\w-])(?:{pattern})(?![\w-])"), repl) for pattern, repl in EVERYDAY_PHRASES
] + [(re.compile(rf"(?<![\w-]){pattern}(?![\w-])"), repl) for pattern, repl in PHRASES]
_WRITTEN_FIRST = [(re.compile(pattern), repl) for pattern, repl in WRITTEN_FIRST]


def normalise(text: str) -> str:
    """Unicode-compatible, case-folded, whitespace collapsed, no trailing ?/!/. — what the
    exact key hashes (so "How do I X?" and "how do  i x" are one question)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = SPACE.sub(" ", text).strip()
    return _TRAILING.sub("", text)


# "US" typed in capitals is the country, which lower case makes the pronoun "us" ("can I use
# my US phone in Europe"); not in a question typed all in capitals.
_US = re.compile(r"(?<![\w.])US(?![\w.]| dollar)")


def rewrite(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    if any(c.islower() for c in text):
        text = _US.sub("USA", text)
    lowered = text.casefold().replace("’", "'")
    for short, long in _CONTRACTIONS.items():
        lowered = lowered.replace(short, long)
    lowered = lowered.replace("n't", " not")
    lowered = _NO_APOSTROPHE.sub(lambda m: f"{_UNCONTRACTED.get(m[1], m[1])} not", lowered)
    lowered = _PRONOUN_VERB.sub(lambda m: f"{m[1]} {_VERBS[m[2]]}", lowered)
    for pattern, replacement in _CHAT:
        lowered = pattern.sub(replacement, lowered)
    lowered = _THANKS.sub("", _GREETING.sub("", lowered.strip()))
    while (trimmed := _TRAILING_FILLER.sub("", lowered)) != lowered and trimmed:
        lowered = trimmed
    while (unframed := _CHATTY.sub("", _without_lead_in(lowered), count=1)) != lowered:
        lowered = _GREETING.sub("", unframed)
    for pattern, replacement in _WRITTEN_FIRST:
        lowered = pattern.sub(replacement, lowered)
    for pattern, replacement in SYMBOLS:
        lowered = pattern.sub(replacement, lowered)
    lowered = SPACE.sub(" ", lowered)
    for phrase, said in _PHRASES:
        lowered = phrase.sub(said, lowered)
    return lowered
