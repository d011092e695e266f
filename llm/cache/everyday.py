"""Everyday vocabulary WordNet does not pair, for the lexical check (llm/cache/lexical/): phrasal
verbs and the verb they mean ("get over" / recover, "hand in" / submit), synonyms its synsets
keep apart (toxic / poisonous, rude / impolite, keep / store), common abbreviations written out
("do it yourself" / DIY, "over the counter" / OTC, "the United States" / the US) and a country's
adjective for the country (French / France).

Only words that mean the same in a question in any of the domains people ask about (cooking,
travel, health, money, software, law, school, home, pets, sport, languages, units, work,
shopping, cars, gardening, parenting, forms, weather); a word with a second common meaning that
would pair it wrongly is left out ("work out" is to calculate or to exercise, "pick up" to
learn or to collect, "turn up" to arrive or to raise). Never two different things of one kind:
no entity, number, unit or opposite is made equal to another here.
"""

from __future__ import annotations

from collections.abc import Callable

# A verb and its particle (as lemma and particle) that mean one plain verb: merged into that
# verb before comparing, so "hand in my thesis" is "submit my thesis". Only where the verb and
# particle mean this whatever follows them.
PHRASAL_VERBS: dict[str, str] = {
    "get over": "recover",
    "hand in": "submit",
    "send in": "submit",
    "fill in": "complete",
    "fill out": "complete",
    "show up": "arrive",
    "fall asleep": "fall asleep",
    "nod off": "fall asleep",
    "doze off": "fall asleep",
    "drift off": "fall asleep",
    "throw away": "discard",
    "throw out": "discard",
    "look for": "search",
    "search for": "search",
    "look up": "search",
    "look after": "care",
    "look into": "investigate",
    "find out": "learn",
    "cut back": "reduce",
    "cut down": "reduce",
    "pay back": "repay",
    "pay off": "repay",
    "pass away": "die",
    "put together": "assemble",
    "take apart": "disassemble",
    "heat up": "heat",
    "put off": "postpone",
    "call off": "cancel",
    "give up": "quit",
    "help out": "help",
    "top up": "refill",
    "fog up": "fog",
    "steam up": "fog",
}
# Particles a verb may take in PHRASAL_VERBS ("hand in", "look for"); the ones the lexical check
# reads as a direction (up, down, off, out...) keep doing so after any other verb.
PARTICLES = frozenset(phrase.split()[1] for phrase in PHRASAL_VERBS)
# An object pronoun between a verb and its particle: "throw it away", "look them up".
OBJECT_PRONOUNS = frozenset({"it", "them", "this", "that", "these", "those", "him", "her"})

# Words one for another in a question, which WordNet's first senses do not pair (mostly
# adjectives, whose synonyms WordNet files under "similar to", not in one synset).
_GROUPS = [
    "toxic poisonous",
    "rude impolite",
    "expensive costly pricey",
    "cheap affordable inexpensive",
    "illegal unlawful",
    "legal lawful",
    "harmful dangerous unsafe",
    "normal usual",
    "enough sufficient adequate",
    "broken damaged break damage",
    "abroad overseas oversea",
    "booking reservation",
    "tired fatigued exhausted",
    "clog block",
    "unclog unblock",
    "leaky leaking leak drip dripping",
    "tap faucet",
    "lawyer solicitor attorney",
    "benefit advantage",
    "document paperwork",
    "company firm",
    "boss manager",
    "salary wage pay",
    "fire dismiss sack",
    "quit resign",
    "exam test examination",
    "teacher instructor",
    "student pupil",
    "toilet loo restroom washroom",
    "pharmacy chemist drugstore",
    "cv resume",
    "car vehicle automobile",
    "hood bonnet",
    "trunk boot",
    "lawn grass",
    "daycare nursery childcare",
    "tantrum meltdown",
    "keep store",
    "prevent avoid",
    "defrost thaw",
    "folder directory",
    "rail train",
    "journey trip",
    "tummy stomach belly",
    "tough hard",
    "huge enormous massive",
    "smart intelligent clever",
    "sad unhappy",
    "scared afraid frightened",
    "worried worry anxious",
    "sick ill unwell",
    "smelly stinky",
    "wet damp",
    "cold chilly",
    "loud noisy",
    "rich wealthy",
    "old elderly",
    "healthy nutritious",
    "risky dangerous",
    "real genuine authentic",
    "shot vaccination vaccine jab",
    "pill tablet",
    "password passcode",
    "restart reboot",
    "start launch",
    "plant sow",
    "grow cultivate",
    "hang mount",
    "install fit",
    "attach fasten",
    "remove eliminate",
    "lose misplace",
    "teach educate",
    "enroll enrol signup",
    "cancel terminate",
    "arrive reach",
    "post mail",
    "pay settle",
    "save conserve",
    "replace change",
    "message text",
    "call ring",
    "heat warm",
    "wash clean",
    "mow cut",
]
# Pairs that are not groups: "make" is "cook", "bake" or "earn" in a question, but to cook is
# not to bake, nor to earn.
_PAIRS = ["make cook", "make bake", "make prepare", "make earn", "cook prepare", "remove discard"]
_PAIRS += ["teach train"]
_GROUP_OF: dict[str, frozenset[str]] = {}
for _group in _GROUPS + _PAIRS:
    for _word in _group.split():
        # A word in two groups ("dangerous") pairs with the words of both.
        _GROUP_OF[_word] = _GROUP_OF.get(_word, frozenset()) | frozenset(_group.split())
# "fall asleep" is one word here (PHRASAL_VERBS): "how to fall asleep faster" is "how to sleep
# faster".
_GROUP_OF["fall asleep"] = _GROUP_OF["sleep"] = frozenset({"fall asleep", "sleep"})


def everyday_synonymous(a: str, b: str) -> bool:
    """Are `a` and `b` (lemmas) one word for the same thing in an everyday question, where
    WordNet does not say so ("toxic" / "poisonous", "keep" / "store")?"""
    return a != b and b in _GROUP_OF.get(a, frozenset())


# A country's adjective and its name: "French towns" are "towns in France". The adjective is
# also the language ("in French"), which a question about the country does not ask about, so
# these pair only words the other side lacks (never "French" with "Germany").
COUNTRIES: dict[str, str] = {
    "american": "usa",
    "british": "uk",
    "scottish": "scotland",
    "welsh": "wales",
    "irish": "ireland",
    "french": "france",
    "german": "germany",
    "spanish": "spain",
    "italian": "italy",
    "portuguese": "portugal",
    "dutch": "netherlands",
    "belgian": "belgium",
    "swiss": "switzerland",
    "austrian": "austria",
    "swedish": "sweden",
    "norwegian": "norway",
    "danish": "denmark",
    "finnish": "finland",
    "polish": "poland",
    "greek": "greece",
    "turkish": "turkey",
    "russian": "russia",
    "ukrainian": "ukraine",
    "czech": "czechia",
    "hungarian": "hungary",
    "chinese": "china",
    "japanese": "japan",
    "korean": "korea",
    "indian": "india",
    "thai": "thailand",
    "vietnamese": "vietnam",
    "indonesian": "indonesia",
    "australian": "australia",
    "canadian": "canada",
    "mexican": "mexico",
    "brazilian": "brazil",
    "argentinian": "argentina",
    "egyptian": "egypt",
    "moroccan": "morocco",
    "nigerian": "nigeria",
    "kenyan": "kenya",
    "israeli": "israel",
    "icelandic": "iceland",
    # Continents, places as a country is ("my US phone in Europe" / "my European phone in the US").
    "european": "europe",
    "asian": "asia",
    "african": "africa",
}


# Short forms that are also a common word the check never compares ("us"): a side that says
# the long form adds nothing when the other says the short one.
SHORT_FORMS = {"usa": "us"}


def country_of(a: str, b: str) -> bool:
    """Is one of `a` and `b` the adjective of the other, a country ("french" / "france")?"""
    return COUNTRIES.get(a) == b or COUNTRIES.get(b) == a


_WEEKDAYS = {"sat": "saturday", "sun": "sunday", "wed": "wednesday"}

# Abbreviations written out, and spellings of one place, rewritten before the words are split
# (lower case, whole words). The acronym rule (llm/cache/spelling.py) pairs most acronyms with
# their words; these are the ones it cannot: the words are small ("do it yourself"), the
# letters are not their initials (tsp), or the short form is also a word ("us").
EVERYDAY_PHRASES: list[tuple[str, str | Callable[..., str]]] = [
    (r"do[- ]it[- ]yourself", "diy"),
    (r"over[- ]the[- ]counter", "otc"),
    (r"for your information", "fyi"),
    (r"frequently asked questions?", "faq"),
    (r"(?:an? |the )?(?:mri|magnetic resonance imaging)(?: scans?)?", "an mri"),
    (r"(?:an? |the )?(?:ct|cat|computed tomography) scans?", "a ct scan"),
    (r"(?:the )?united states(?: of america)?", "the usa"),
    (r"(?:the )?u\.s\.(?:a\.)?(?! dollars?\b)", "the usa"),
    (r"the us(?!\w)", "the usa"),
    (
        r"us(?= (?:citizens?|passports?|visas?|president|embassy|residents?|government|states?|"
        r"tax|taxes|army|elections?|customs|border|military|congress|senate|constitution)\b)",
        "usa",
    ),
    (r"(?<!latin )(?<!south )(?<!north )(?<!central )(?<!bank of )america(?![\w])", "the usa"),
    (r"(?:the )?united kingdom", "the uk"),
    (r"(?:the )?u\.k\.", "the uk"),
    (r"(?:great )?britain", "the uk"),
    (r"teaspoons?|tsps?", "teaspoon"),
    (r"tablespoons?|tbsps?|tbs", "tablespoon"),
    (r"fl\.? oz", "fluid ounce"),
    (r"sq\.? ?(?:ft|feet|foot)|square f(?:ee|oo)t|ft2|ft²", "square foot"),
    (r"sq\.? ?m|square met(?:re|er)s?|m2|m²", "square metre"),
    (r"qts?", "quart"),
    (r"gals?", "gallon"),
    (r"yds?", "yard"),
    (r"kcals?|cals", "calorie"),
    (r"(?:id|identity|identification) cards?|identification", "id"),
    (r"photo id", "id"),
    (r"(?:zip|post|postal) ?codes?", "postcode"),
    (r"(?:atm|cash ?machine|cashpoint)s?", "atm"),
    (r"(?:checking|current) accounts?", "checking account"),
    (r"(?:driver'?s|drivers|driving) (\w+)", r"driving \1"),
    (r"(?:gas|petrol|filling|service) stations?", "gas station"),
    (r"(?:car ?park|parking lot|parking garage)s?", "parking lot"),
    (r"(?:motor|engine) oil", "oil"),
    (r"(?:stomach|tummy|belly) ?aches?", "stomachache"),
    (r"(?:high blood pressure|hypertension)", "hypertension"),
    (r"(?:wireless (?:network|internet)|wi-?fi network)", "wifi"),
    (r"(?:text messages?|sms(?: messages?)?)", "text message"),
    (r"(?:a |one )?half (?:a |of a )?dozen", "6"),
    (r"(?:a |one )dozen", "12"),
    # "is it ok to" asks whether it is safe to.
    # ("fine" only after "is it": "fine for speeding" asks for a penalty.)
    (r"(?:is it|it is) (?:ok|okay|alright|all right|fine)(?= (?:to|for)\b)", "is it safe"),
    (r"^(?:ok|okay|alright|all right)(?= (?:to|for)\b)", "is it safe"),
    (r"take(?:s|n|ing)? care of", "care for"),
    (r"(?:least (?:expensive|costly)|lowest[- ]cost|most affordable)", "cheapest"),
    # Bought used is second-hand ("used" alone only frames a question: "what is X used for").
    (r"second[- ]hand|pre[- ]owned", "secondhand"),
    (r"(a|an|buy|buying|bought|sell|selling|of) used(?= (?!to\b|for\b|by\b))", r"\1 secondhand"),
    (r"used(?= (?:cars?|laptops?|phones?|bikes?|books?|furniture|clothes|items?)\b)", "secondhand"),
    # A weekday short form that is also a word ("sat", "sun", "wed") after "on", "this"...
    (r"(on|this|next|last|every) (sat|sun|wed)s?", lambda m: f"{m[1]} {_WEEKDAYS[m[2]]}"),
    (r"grown[- ]ups?", "adult"),
    # A product named with or without its maker: "Google Chrome" is "Chrome".
    (r"google (chrome|maps|docs|sheets|drive|photos|calendar|translate|pixel)", r"\1"),
    (r"microsoft (word|excel|teams|outlook|edge|powerpoint|onenote)", r"\1"),
    (r"adobe (photoshop|acrobat|illustrator|premiere|lightroom)", r"\1"),
    (r"(?:shopping (?:centre|center|mall)|mall)s?", "mall"),
    (r"(?:pay|salary) rise", "raise"),
    # Ways of asking how: "a guide to descaling a kettle", "instructions for ...".
    (
        r"(?:an? |the )?(?:step[- ]by[- ]step )?(?:guide|instructions|tutorial|walkthrough)"
        r"(?: on| for| to)?(?= \w+ing\b)",
        "how to",
    ),
    # Signs asked for as a question: "how do I know if my cat is ill" / "signs my cat is ill".
    (r"how (?:do|can|would|could) (?:i|you|we|one) (?:know|tell)(?: if| whether| when)?", "signs"),
    (r"how to (?:know|tell)(?: if| whether| when)", "signs"),
    (r"(?:the )?formula (?:for|to calculate|to work out|of)", "calculate"),
    (r"(?:at )?what age(?= (?:should|do|does|can|could|is|are|to)\b)", "when"),
    (r"(?:is|are) (?:considered|deemed|classed as|regarded as)", "is"),
    (r"(?:has|have|had|is|are) gone (?:off|bad|sour)", "is bad"),
    # Removing a thing from a surface: "get rust off a chain" (not "get a day off").
    (
        r"get (?!(?:an? |the )?(?:days?|time|weeks?|work|bus|train|plane)\b)(\w+(?: \w+)?) off"
        r"(?: of)?(?= (?:my |the |an? |your |his |her |their )?\w)",
        r"remove \1 from",
    ),
    # "how expensive is X" asks its price, like "how much does X cost".
    (r"how (?:expensive|costly|pricey) (?:is|are|was|were)", "price"),
]

# Rewritten before "/" splits words: a fraction before a word is that word's share ("1/2 an
# avocado" is "half an avocado"), and an age in years ("3yo", "3 y/o") is "3 year old".
WRITTEN_FIRST: list[tuple[str, str]] = [
    (r"(?<![\d/.,])1/2(?= ?[a-z])", "half "),
    (r"(?<![\d/.,])1/4(?= ?[a-z])", "quarter "),
    (r"(?<![\d/.,])3/4(?= ?[a-z])", "three quarter "),
    (r"(?<![\w.])(\d+) ?(?:yo|y/o|y\.o\.|yr old|yrs old)(?!\w)", r"\1 year old"),
]

# Common short forms of words, spelled out (chat, school, home, calendar); the lexical check's
# own table (lexicon.ABBREVIATIONS) takes them in. Not a short form that is another common word
# ("sat", "sun", "wed", "mar", "may").
ABBREVIATED_WORDS: dict[str, str] = {
    "carb": "carbohydrate",
    "carbs": "carbohydrate",
    "temp": "temperature",
    "tv": "television",
    "fav": "favorite",
    "fave": "favorite",
    "vid": "video",
    "vids": "video",
    "apt": "apartment",
    "dr": "doctor",
    "tix": "ticket",
    "hw": "homework",
    "intl": "international",
    "bldg": "building",
    "ave": "avenue",
    "mon": "monday",
    "tue": "tuesday",
    "tues": "tuesday",
    "thu": "thursday",
    "thur": "thursday",
    "thurs": "thursday",
    "fri": "friday",
    "feb": "february",
    "apr": "april",
    "aug": "august",
    "sept": "september",
    "oct": "october",
    "nov": "november",
}
