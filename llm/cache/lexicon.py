"""Word lists of the lexical check (llm/cache/lexical/): what is rewritten before comparing two
questions (symbols, units, abbreviations, set phrases), which words only frame a question, and
which words are synonyms. Generic question vocabulary only: an entity (a country, a product, a
language) is never made equal to another one here."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.conf.locale import LANG_INFO

from llm.cache.everyday import ABBREVIATED_WORDS

_SMALL_NUMBER = (
    r"\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty"
)

# Rewritten in the lower-cased text before it is split into words, in this order.
SYMBOLS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(\d)\s*%"), r"\1 percent"),
    (re.compile(r"%"), " percent "),
    # A currency sign before or after its amount ("$40", "40 €", "₹500") is the currency's name.
    *(
        (re.compile(rf"{sign}\s*(\d[\d,.]*)|(\d[\d,.]*)\s*{sign}"), rf"\1\2 {name}")
        for sign, name in (
            # Another country's dollar is another currency.
            (r"(?<!\w)a\$", "aud"),
            (r"(?<!\w)c\$", "cad"),
            (r"(?<!\w)nz\$", "nzd"),
            (r"(?<!\w)hk\$", "hkd"),
            (r"(?<!\w)(?:us)?\$", "dollar"),
            ("€", "euro"),
            ("£", "gbp"),
            ("¥", "yen"),
            ("₹", "rupee"),
            ("₩", "won"),
            ("₽", "ruble"),
            ("₺", "lira"),
            ("₪", "shekel"),
            ("฿", "baht"),
            ("₱", "peso"),
            ("₿", "bitcoin"),
        )
    ),
    # Arithmetic between two numbers, said in words: "2 + 2" is "two plus two".
    # Ordinals are words, not numbers: "2nd" is "second" (and "second" stays a content word).
    *(
        (re.compile(rf"(?<![\w.]){digit}(?:st|nd|rd|th)\b"), word)
        for digit, word in (
            ("1", "first"),
            ("2", "second"),
            ("3", "third"),
            ("4", "fourth"),
            ("5", "fifth"),
            ("6", "sixth"),
            ("7", "seventh"),
            ("8", "eighth"),
            ("9", "ninth"),
            ("10", "tenth"),
        )
    ),
    # Above ten an ordinal is compared as its number: "sixteenth" is "16th".
    *(
        (re.compile(rf"\b{word}\b"), f"{number}th")
        for number, word in enumerate(
            "eleventh twelfth thirteenth fourteenth fifteenth sixteenth seventeenth "
            "eighteenth nineteenth twentieth".split(),
            11,
        )
    ),
    # "seven times eight" is "7 × 8".
    (re.compile(rf"\b({_SMALL_NUMBER}) times (?=(?:{_SMALL_NUMBER})\b)"), r"\1 multiply "),
    (re.compile(r"(\d)\s*\+\s*(?=\d)"), r"\1 plus "),
    (re.compile(r"(\d)\s*(?:[×x*]|times)\s*(?=\d)"), r"\1 multiply "),
    (re.compile(r"(\d)\s*÷\s*(?=\d)"), r"\1 divided by "),
    (re.compile(r"(\d)\s+-\s+(?=\d)"), r"\1 minus "),
    # A negative number said in words is one with its sign: "the cube of negative 2" is "-2",
    # "what is minus 40 celsius" "-40 celsius"; not a subtraction ("£50 minus 20 percent").
    (re.compile(r"(?:^|(?<=\D ))negative (?=\d)"), "-"),
    (re.compile(r"(^|\b(?:of|is|at|to|by|from|be|equals) )minus (?=\d)"), r"\1-"),
    (re.compile(r"(\d)\s*\^\s*(?=\d)"), r"\1 power "),
    (re.compile(r"\s*=\s*\??\s*$"), ""),  # "sqrt(144) = ?" asks what it is
    # Code's operators, each its own word (lexical/alternatives.py "operator"): "==" is not
    # "===", "&&" is not "||".
    (re.compile(r"\s*!==?\s*"), " inequality "),
    (re.compile(r"\s*===\s*"), " identity "),
    (re.compile(r"\s*==\s*"), " equality "),
    (re.compile(r"\s*&&\s*"), " conjunction "),
    (re.compile(r"\s*\|\|\s*"), " disjunction "),
    (re.compile(r"\s*=\s*"), " equals "),
    (re.compile(r"(\d[\d,.]*)\s*(usd|eur|gbp|jpy|chf|cad|aud)\b"), r"\1 \2"),
    (re.compile(r"°\s*f\b"), " fahrenheit"),
    (re.compile(r"°\s*c\b"), " celsius"),
    # A temperature typed without its degree sign: "bake at 200 c", "set it to 350F". Only after
    # "at" / "to" or ending the question (its "?" or "!" may follow): "2 c flour" may be cups,
    # "3 c programs" the language. Only a number standing alone: "app 4b87ca4f" is a code.
    (re.compile(r"\b(at|to) (\d+) ?c\b(?![+#])"), r"\1 \2 celsius"),
    (re.compile(r"\b(at|to) (\d+) ?f\b"), r"\1 \2 fahrenheit"),
    (re.compile(r"(?<![\w.,])(\d+(?:[.,]\d+)?) ?c(?=[\s?!.]*$)"), r"\1 celsius"),
    (re.compile(r"(?<![\w.,])(\d+(?:[.,]\d+)?) ?f(?=[\s?!.]*$)"), r"\1 fahrenheit"),
    # Feet and inches in the typographic notation: 5'10" is 5 ft 10 in.
    (re.compile(r"(\d+)\s*(?:'|′|ft)\s*(\d+)\s*(?:\"|''|″|in\b)"), r"\1 ft \2 inch"),
    (re.compile(r"(\d+)\s*(?:\"|''|″)"), r"\1 inch"),
    (re.compile(r"°"), " degree "),
    (re.compile(r"\s&\s"), " and "),
    # "iPhone/Android"; not "w/o", which PHRASES below read as "without".
    (re.compile(r"(?<=\w)(?<!\bw)/(?=\w)"), " "),
    # Units written against their number: "5km", "10kg", "3ft".
    (
        re.compile(
            r"(\d)((?:k|c|m|d|μ|mc)?(?:m|g|l)|lbs?|oz|ft|mi|gb|mb|kb|tb|hz|ghz|mph|kph|km/h)\b"
        ),
        r"\1 \2",
    ),
]

# The US Postal Service's two-letter state codes that are no English word or unit (not "in",
# "or", "ok", "me", "hi", "mi"...), and Washington, DC: https://pe.usps.com/text/pub28/28apb.htm
US_STATES = {
    "ak": "alaska",
    "az": "arizona",
    "ca": "california",
    "ct": "connecticut",
    "fl": "florida",
    "ga": "georgia",
    "ia": "iowa",
    "il": "illinois",
    "ks": "kansas",
    "ky": "kentucky",
    "mn": "minnesota",
    "nc": "north carolina",
    "nh": "new hampshire",
    "nj": "new jersey",
    "nm": "new mexico",
    "nv": "nevada",
    "ny": "new york",
    "pa": "pennsylvania",
    "ri": "rhode island",
    "sc": "south carolina",
    "tn": "tennessee",
    "tx": "texas",
    "ut": "utah",
    "va": "virginia",
    "vt": "vermont",
    "wa": "washington",
    "wv": "west virginia",
    "wy": "wyoming",
    "dc": "washington dc",
}

_GOOD = (
    "(?:good|best|easiest|simplest|quickest|fastest|right|proper|correct|recommended|ideal|"
    "optimal|smartest|most efficient|most effective)"
)
# "make my laptop faster" asks to speed it up: the comparative is what is asked.
_COMPARATIVE = "(faster|quicker|smaller|bigger|larger|shorter|longer|cheaper|safer|better|easier)"
# Language names (Django's list of the languages it is translated into, and a few more).
_LANGUAGE_NAMES = {
    str(info["name"]).casefold() for info in LANG_INFO.values() if "name" in info
} | {"chinese", "mandarin", "cantonese", "latin", "tagalog", "filipino"}
_LANGUAGE = "(" + "|".join(sorted(n for n in _LANGUAGE_NAMES if n.isalpha())) + ")"

_CREDENTIAL = r"(password|passcode|passphrase|pin|username|login|pw|pwd)"

# Set phrases (lower-cased, whole words), rewritten before splitting into words.
PHRASES: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
    (r"w/o", "without"),
    # "every other row" is every second one, not every one (lexical/alternatives.py "share").
    (r"every (?:other|second)", "alternate"),
    (r"of all time", "ever"),
    # Comparisons with a number: "more than 23 kg" is "over 23 kg".
    (r"more than", "over"),
    (r"(?:less|fewer) than", "under"),
    (r"(?:am|are|is) (i|we|you|it) (?:allowed|permitted) to", r"can \1"),
    (r"change (?:the |its |my |your |a )?name of", "rename"),
    (r"back(?:s|ed|ing)? up", "backup"),
    (r"send(?:s|ing)? back", "return"),
    (r"send(?:s|ing)? (\w+(?: \w+)?) back", r"return \1"),
    # Reshaped questions: "1 mile is how many km" is "how many km are in a mile", "calorie
    # count of a banana" is "how many calories are in a banana", "what's the German for X" is
    # "how do you say X in German".
    (
        r"((?:an?|one|\d[\d.,]*) \w+) (?:is|are|equals?|makes?) how (?:many|much) (\w+)",
        r"convert \1 to \2",
    ),
    (r"(\w+) count (?:of|for|in) (an?|the|one)", r"how many \1 in \2"),
    (rf"what(?: is|'s| are) the {_LANGUAGE} (?:word |words |term |phrase )?for", r"translate \1"),
    # (A short phrase, and the language ends the question: "what is the word order in German
    # grammar" is not a translation.)
    (rf"what(?: is|'s| are) ((?:\S+ ){{0,4}}?\S+) in {_LANGUAGE}[?.!]*$", r"translate \1 in \2"),
    (rf"make (\w+(?: \w+)?) {_COMPARATIVE}", r"\2 \1"),
    (r"(?:km|kilomet(?:re|er)s?) (?:per |an |a )?(?:h|hr|hour)", "kph"),
    (r"(?:mi|miles?) (?:per |an |a )(?:h|hr|hour)", "mph"),
    (r"per ?cent", "percent"),
    # How often, said three ways: "daily", "every day", "a day" / "per day".
    (r"daily", "per day"),
    (r"weekly", "per week"),
    (r"monthly", "per month"),
    (r"(?:yearly|annually)", "per year"),
    (r"(?:every|each) (day|week|month|year|hour)", r"per \1"),
    # "a day" only where it ends the phrase: "a day trip" is a kind of trip.
    (
        r"(?:a|an) (day|week|month|year|hour)(?=\s*[?.!,]|\s*$|\s+(?:too|is|are|was|for|in|on|at|"
        r"and|or|to|with|of|enough|normal|healthy|safe|ok|okay|while|when|if|but|so|than)\b)",
        r"per \1",
    ),
    (r"(?:around|round) the clock", "24 hours per day"),
    (r"multiplied by", "multiply"),
    (r"w/", "with"),
    (r"time zones?", "timezone"),
    (r"wi-?fi", "wifi"),
    (r"e-?mails?", "email"),
    (r"e-?books?", "ebook"),
    (r"web ?sites?", "website"),
    (r"user ?names?", "username"),
    (r"pass ?words?", "password"),
    (r"set(?:ting)?s?[- ]up", "setup"),
    (r"(?:turn|switch)(?:ed|ing|s)? on", "enable"),
    (r"(?:turn|switch)(?:ed|ing|s)? off", "disable"),
    (r"(?:turn|switch)(?:ed|ing|s)? (?:\w+ )?on", "enable"),
    (r"(?:turn|switch)(?:ed|ing|s)? (?:\w+ )?off", "disable"),
    (r"(?:log|sign)(?:ged|ging|s)? (?:in|into|on)", "login"),
    (r"(?:log|sign)(?:ged|ging|s)? (?:out|off)", "logout"),
    (r"sign(?:ed|ing|s)? up", "signup"),
    (r"money back", "refund"),
    (r"claim(?:s|ed|ing)? (?:back|a refund for)", "refund"),
    (r"get rid of", "remove"),
    (r"big-?o", "complexity"),
    (r"virtual env(?:ironment)?s?", "virtualenv"),
    (r"opening (?:hours|times)", "open"),
    (r"closing (?:hours|times?)", "close"),
    (r"business hours", "open"),
    (r"(?:stands?|short) for", "abbreviation"),
    # A translation asked in other shapes: "what does X mean in English", "Swedish word for
    # X", "translate X into French", and (short, ending the question) "cheese in French".
    (rf"what does (.+?) mean in {_LANGUAGE}[?.!]*$", r"translate \1 in \2"),
    (rf"{_LANGUAGE} (?:word|words|term|phrase) for (.+?)[?.!]*$", r"translate \2 in \1"),
    # "Spanish for where is the bathroom" (opening the question).
    (rf"^{_LANGUAGE} for (.+?)[?.!]*$", r"translate \2 in \1"),
    (rf"translate (.+?) (?:to|into) {_LANGUAGE}", r"translate \1 in \2"),
    # A phrase of up to five words and the language, that is not itself a question ("thank
    # you very much in Japanese"; not "how is coffee in Italian", "what is the word order in
    # German grammar").
    (
        r"^(?!(?:how|what|why|when|where|which|who|is|are|can|do|does|should|best|"
        r"translate)\b)"
        rf"((?:\S+ ){{0,4}}?\S+) in {_LANGUAGE}[?.!]*$",
        r"translate \1 in \2",
    ),
    (
        rf"how (?:do|would|can|should) (?:i|you|we) write (.+?) in {_LANGUAGE}[?.!]*$",
        r"translate \1 in \2",
    ),
    (r"how do you say", "translate"),
    (r"how (?:do|would|can) (?:i|you|we) say", "translate"),
    # Into English is what a foreign word means: "translate danke to English" / "what does
    # danke mean".
    (r"translate (.+?) in english[?.!]*$", r"what does \1 mean"),
    (rf"pick(?:s|ed|ing)? up {_LANGUAGE}", r"learn \1"),
    (r"what is the number of", "how many"),
    (r"how many people live in", "population"),
    (r"how fast (?:does|do|is|are|can) (.+?) (?:travel|go|move|run)", r"speed \1"),
    (r"how fast", "speed"),
    (r"speed(?:s|ing)? up", "faster"),
    (r"how long", "duration"),
    # The unit stays: "how many hours" and "how many minutes" ask different things.
    (r"how many (seconds|minutes|hours|days|weeks|months|years)", r"duration \1"),
    # A count asked back to front: "a banana has how many calories".
    (r"^(.+) (?:has|have|contains?) how many (\w+)[?.!]*$", r"how many \2 in \1"),
    # A conversion asked as a question is the conversion: "how many euros is 5 dollars",
    # "how much is 5 usd in eur", "what is 100 f in c" all become "convert X to Y".
    (
        r"how (?:many|much) (\w+) (?:is|are|in|for|equals?)(?: in)? "
        rf"((?:an?|{_SMALL_NUMBER}|\d[\d.,]*) \w+)",
        r"convert \2 to \1",
    ),
    (
        r"(?:how much|how far|what) (?:is|are) (\d[\d.,]* ?\w+(?: \w+)?) in (\w+)",
        r"convert \1 to \2",
    ),
    (r"how tall", "height"),
    (r"how high", "height"),
    (r"how big", "size"),
    (r"how old", "age"),
    (r"how much does (.+?) cost", r"price \1"),
    (r"how much (?:is|are) (a|an|the)(?! \d[\d.,]* percent)", r"price \1"),
    (r"get in touch with", "contact"),
    # "TCP vs UDP?" asks what tells them apart.
    (r"^(\w+(?: \w+)?) (?:vs\.?|versus) (\w+(?: \w+)?)[?.!]*$", r"difference between \1 and \2"),
    (r"what (?:makes|causes)", "why"),
    (r"what is the cause of", "why"),
    (r"what is the reason", "why"),
    (r"how come", "why"),
    # A forgotten or lost credential is reset; a lost passport or phone is not.
    (rf"forgot(?:ten)? (?:my|the|your) {_CREDENTIAL}", r"reset \1"),
    (rf"lost (?:my|the|your) {_CREDENTIAL}", r"reset \1"),
    (r"two[- ]?fa", "two factor authentication"),
    (r"2[- ]?fa", "two factor authentication"),
    (r"(?:two|2)[- ]?(?:factor|step) auth\b", "two factor authentication"),
    (r"(?:two|2)[- ]step verification", "two factor authentication"),
    (r"(?:two|2)[- ]factor verification", "two factor authentication"),
    (r"(?:two|2)[- ]factor authentication", "two factor authentication"),
    (r"multi[- ]?factor authentication", "mfa"),
    (r"single[- ]sign[- ]on", "sso"),
    (r"machine learning", "ml"),
    (r"artificial intelligence", "ai"),
    (r"value[- ]added tax", "vat"),
    (r"operating system", "os"),
    (r"command[- ]line", "terminal"),
    (r"(?:us|u\.s\.|american) dollars?", "dollar"),
    (r"british pounds?(?: sterling)?", "gbp"),
    (r"pounds? sterling", "gbp"),
    (r"japanese yen", "yen"),
    (r"mandarin chinese", "mandarin"),
    (r"square root", "sqrt"),
    # How a question is framed, not what it asks.
    (rf"(?:what(?: is|'s)|which is) (?:a|the) {_GOOD} (?:way|method) (?:to|of)", "how to"),
    # With its article or without ("best way to learn coding?").
    (rf"(?:(?:a|the) )?{_GOOD} way to", "how to"),
    # Where to see a thing, said with a phrasal verb or a plain one ("find out my credit
    # score", "look up my order history", "discover my blood type"); "check in" for a flight
    # is no looking.
    (
        r"how (?:do|can|should|would) (?:i|you|we|one) (?:find out|look up|look for|"
        r"search(?: for)?|find|locate|get to|see|view|check(?! in\b)|discover|determine)",
        "where",
    ),
    (
        r"where (?:do|can|should|would) (?:i|you|we|one) (?:find out|look up|look for|"
        r"search(?: for)?|find|locate|see)",
        "where",
    ),
    (r"right now", "now"),
    (r"(?:see|check|find|get|know) (?:the )?status of", "track"),
    # ("how long does it take to walk" is not a payment.)
    (
        r"(?:do|does|can) (?:you|they) (?:accept|take) (?!to\b|a\b|an\b|the\b)(\w+)(?: payments?)?",
        r"can i pay \1",
    ),
    (r"(boiling|freezing|melting) point of (\w+)", r"\1 temperature \2"),
    (r"at what temperature (?:does|do|is|are) (\w+) (boil|freeze|melt)", r"\2 temperature \1"),
    (r"(?:is|are|be) (?:worked|figured) out", "calculate"),
    (r"free(?:s|d|ing)? up", "clear"),
    (r"degrees? (fahrenheit|celsius|kelvin)", r"\1"),
    (r"at the moment", "now"),
    (r"(?:what|which) (?:can|could|should|do) (?:i|you|we) use instead of", "substitute for"),
    # A substitute asked for is a good one.
    (rf"(?:a |an |the )?{_GOOD} (substitute|alternative|replacement)s?", r"\1"),
    (r"(?:talk|speak)(?:s|ing)? to", "contact"),
    (r"(?:the )?(?:city|town) cent(?:re|er)", "downtown"),
    (r"(?:the )?status of", "track"),
    (r"by (?:myself|yourself|himself|herself|itself|ourselves|yourselves|themselves)", "alone"),
    (r"as soon as possible", "asap"),
    (r"human resources?", "hr"),
    (r"graphics? cards?", "gpu"),
    (r"carry[- ]?on(?: bags?| luggage| baggage)?", "hand luggage"),
    (r"hand baggage", "hand luggage"),
    (r"get (.+?) out of", r"remove \1 from"),
    # Advice asked for is how to do it: "any tips for organizing X" is "how to organize X".
    (r"(?:any )?(?:tips|advice|suggestions) (?:for|on|to) (\w+ing)", r"how to \1"),
    (r"(?:any )?(?:tips|advice|suggestions) (?:for|on|to)", "how to"),
    # ... and so is a topic followed by "tips" ending the question: "job interview tips".
    (r"^(?:some |any )?(\w+(?: \w+)?) (?:tips|advice)[?.!]*$", r"how to \1"),
    # A recipe is how to make something: "pancake recipe", "a recipe for pancakes".
    (r"(?:a |the )?recipes? (?:for|of)", "how to make"),
    (r"(\w+) recipes?", r"how to make \1"),
    # A count asked in two words: "calories in a banana" is "how many calories in a banana".
    (r"^(\w+) in ((?:an?|one|\d[\d.,]*) \w+)[?.!]*$", r"convert \2 to \1"),
    (r"in (?:degrees? )?f$", "in fahrenheit"),
    (r"in (?:degrees? )?c$", "in celsius"),
    # A place said by its common abbreviation: "nyc", and a US state's postal code ending the
    # question after "in" ("a drivers license in ca"), where it cannot be a word or unit.
    (r"nyc", "new york city"),
    (rf"in ({'|'.join(US_STATES)})[?.!]*$", lambda m: f"in {US_STATES[m[1]]}"),
    (r"med school", "medical school"),
    # A list asked for as an order ("list the planets", "name the bones in the arm") is the
    # question "what are ..."; "what are the bones in the arm called" asks the same.
    (r"^(?:list|name) (the|all)", r"what are \1"),
    (r"^(what (?:are|is) .+) called[?.!]*$", r"\1"),
    (r"(?:won't|will not|doesn't|does not|can't|can not) stop (\w+ing)", r"keep \1"),
    (r"(?:another|other|different) words? for", "synonym for"),
    (r"one (\w+) at a time", r"\1 by \1"),
    (r"set (?:a|up a) new (\w+)", r"change \1"),
    (r"the (?:first|1st) world war", "world war 1"),
    (r"the (?:second|2nd) world war", "world war 2"),
]

# One word for another: abbreviations and spellings, then the words' lemmas are compared.
ABBREVIATIONS: dict[str, str] = {
    "tz": "timezone",
    "pw": "password",
    "pwd": "password",
    "acct": "account",
    "info": "information",
    "pic": "picture",
    "pics": "picture",
    "photo": "picture",
    "msg": "message",
    "msgs": "message",
    "repo": "repository",
    "k8s": "kubernetes",
    "js": "javascript",
    "nodejs": "node",
    "node.js": "node",
    "ts": "typescript",
    "py": "python",
    "db": "database",
    "u": "you",
    "ur": "your",
    "pls": "please",
    "plz": "please",
    "thx": "thanks",
    "flu": "influenza",
    "cm": "centimetre",
    "centimeter": "centimetre",
    "mm": "millimetre",
    "millimeter": "millimetre",
    "km": "kilometre",
    "kilometer": "kilometre",
    "m": "metre",
    "meter": "metre",
    "kg": "kilogram",
    "kilo": "kilogram",
    "kilos": "kilogram",
    "g": "gram",
    "mg": "milligram",
    "milliliter": "ml",
    "millilitre": "ml",
    "lb": "pound",
    "lbs": "pound",
    "oz": "ounce",
    "ft": "foot",
    "feet": "foot",
    "mi": "mile",
    "ml": "ml",
    "litre": "liter",
    "kb": "kilobyte",
    "mb": "megabyte",
    "gb": "gigabyte",
    "tb": "terabyte",
    # Chat shorthand.
    "sub": "subscription",
    "subs": "subscription",
    "appt": "appointment",
    "vit": "vitamin",
    "meds": "medication",
    "ppl": "people",
    "cxl": "cancel",
    "max": "maximum",
    "dept": "department",
    "govt": "government",
    "addr": "address",
    "config": "configuration",
    "admin": "administrator",
    "auth": "authentication",
    "env": "environment",
    "pkg": "package",
    "avg": "average",
    "yr": "year",
    "yrs": "year",
    "wk": "week",
    "wks": "week",
    "tmrw": "tomorrow",
    "tmr": "tomorrow",
    "tomorow": "tomorrow",
    "bday": "birthday",
    "convo": "conversation",
    "uni": "university",
    "mgr": "manager",
    "qty": "quantity",
    "approx": "approximately",
    "diff": "difference",
    "tyre": "tire",
    "tyres": "tire",
    "hr": "hour",
    "hrs": "hour",
    "min": "minute",
    "mins": "minute",
    "sec": "second",
    "secs": "second",
    "usd": "dollar",
    "eur": "euro",
    "jpy": "yen",
    "mph": "mile hour",
    "kph": "kilometre hour",
    "percentage": "percent",
    "pct": "percent",
    "colour": "color",
    "favourite": "favorite",
    "organization": "organisation",
    "org": "organisation",
    "summarise": "summarize",
    "summarize": "summarize",
    "analyse": "analyze",
    "licence": "license",
    "cancelled": "cancel",
    "cancelling": "cancel",
    "programme": "program",
    "catalogue": "catalog",
    "theatre": "theater",
    "centre": "center",
    "defence": "defense",
    "travelling": "travel",
    "travelled": "travel",
    "signin": "login",
    "log-in": "login",
    "signout": "logout",
    "log-out": "logout",
    "sign-up": "signup",
    "register": "signup",
    "registration": "signup",
    "e-mail": "email",
    "set-up": "setup",
}

# Groups of words that ask the same thing in a question; each maps to its first word.
_SYNONYM_GROUPS = [
    "create make generate set",
    "remove delete erase",
    "exit quit leave",
    "change update modify edit alter switch",
    "largest biggest greatest",
    "tallest highest",
    "height tall high",
    "contact reach",
    "get obtain receive retrieve",
    "see view display check find show look list",
    "kill terminate",
    "mode theme",
    "symptom sign",
    "substitute replacement alternative",
    "plot story storyline",
    "construct build",
    "calculate compute",
    "differ difference different compare comparison distinguish versus vs",
    "price cost pricing fee charge",
    "fast faster speed quick quickly rapid",
    "learn study",
    "merge combine",
    "app application",
    "phone mobile smartphone cellphone",
    "write author wrote writer written",
    "setup configure configuration",
    "dict dictionary",
    "int integer",
    "string str",
    "virtualenv venv",
    "refund reimburse reimbursement",
    "summarize summary summarise synopsis recap",
    "translate translation say",
    "picture photo image avatar",
    "shipping delivery shipment",
    "ship deliver",
    "invite add",
    "member user",
    "colleague coworker co-worker teammate",
    "conversation chat",
    "start begin",
    "end finish",
    "purchase buy",
    "reset recover",
    "help support assistance",
    "error problem issue",
    "fix solve resolve repair",
    "send transmit",
    "download export",
    "run execute",
    "need require",
    "allow permit",
    "cancel stop",
    "open opening",
    "close closing",
    "lower reduce",
    "raise increase",
    "loop iterate",
    "load read",
    "turn convert",
    "document doc",
    "discover discoverer",
    "paint painter artist",
    "timezone tz",
    "world earth globe",
    "undo revert",
    "last latest recent",
    "improve boost enhance",
    "split divide",
    "choose select pick",
    "leak drip",
]

# Metric units in every spelling: symbol, -metre/-meter, -litre/-liter, singular or plural.
# "ml" stays "ml" (machine learning is rewritten to it too, and "ML" may be either).
# (NFKC makes the micro sign a Greek mu.)
_PREFIXES = {"": "", "k": "kilo", "c": "centi", "d": "deci", "m": "milli", "μ": "micro"}
_BASES = {"m": ("metre", "meter"), "l": ("litre", "liter"), "g": ("gram", "gramme")}
UNITS: dict[str, str] = {}
for _short, _prefix in _PREFIXES.items():
    for _symbol, (_british, _american) in _BASES.items():
        _name = "ml" if _short + _symbol == "ml" else _prefix + _british
        UNITS[_short + _symbol] = _name
        for _spelling in (_british, _american):
            UNITS[_prefix + _spelling] = UNITS[_prefix + _spelling + "s"] = _name
UNITS |= {"mcg": "microgram", "ug": "microgram", "kilo": "kilogram", "kilos": "kilogram"}
ABBREVIATIONS |= UNITS
ABBREVIATIONS |= {
    "inr": "rupee",
    "krw": "won",
    "cny": "yuan",
    "rmb": "yuan",
    "renminbi": "yuan",
    "btc": "bitcoin",
    "buck": "dollar",
    "bucks": "dollar",
    "quid": "gbp",
}
ABBREVIATIONS |= ABBREVIATED_WORDS

SYNONYMS: dict[str, str] = {
    word: group.split()[0] for group in _SYNONYM_GROUPS for word in group.split()
}

# Words that frame a question without changing what it asks: they may be on one side only.
FRAMING = frozenset(
    """explain explanation tell describe description define definition meaning mean means
    simple simply terms briefly exactly way ways method syntax know
    possible help want need like thing things example examples actually really
    basically someone something anyone anything short give also just kindly again go
    going try trying able process procedure steps step idea option options
    number amount kind type sort word phrase term city person year time day
    current currently now today please ok okay
    shortcut command code use using used work works working happen happens happened
    new copy own available instead mean called call abbreviation every
    wonder wondering curious question ask much error locate located situated whether
    necessary suppose supposed stuff""".split()
)

# Where a support question is asked from, said or not: "delete my account permanently", "for
# my team". Free when only one side has them.
CONTEXT = frozenset(
    "account team customer permanently online earth world terminal".split()
    # Light verbs: "take a screenshot" is "screenshot", "do you offer X" is "is there X".
    + "take offer provide".split()
    # A conversion said as one ("convert 5 km to miles", "how many calories in an avocado")
    # or not ("5 km in miles", "avocado calories").
    + ["turn"]
)

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been being
    below between both but by can could did do does doing down during each few for further had
    has have having he her here hers herself him himself his how i if in is it its itself just
    let me might more most must my myself of off on once only or other our ours ourselves out
    own same shall she should so some such that the their theirs them themselves then there
    these they this those through too under until up very was we were what when where which
    while who whom whose why will with would you your yours yourself yourselves
    i'm i've i'd it's what's how's where's who's there's that's let's im ive whats hows
    get got via""".split()
)

# Question words kept as content: "why" asks for a cause, "how many" for a count.
ASPECTS = frozenset({"why"})
