"""Hard negatives for the reply cache's judge: a rewording with one deciding detail swapped.

    .venv/bin/python bench/judge_swaps.py --without cache_heldout21 --without cache_heldout22 \
        --out /tmp/swaps.json
    /tmp/torchenv/bin/python bench/judge_train.py ... --extra /tmp/swaps.json

A judge trained on more epochs of the written sets learnt phrase-level rewordings but scored a
reworded question with one entity or operation changed like a rewording (IRS / DMV 0.974, eSIM /
local SIM card, square root / squared: docs/benchmarks.md, "Cache: round 8"). Few written
near-misses are that: most change a detail of the *same* wording. So for each rewording (a, b)
of the sets (tuning and training, but those named by --without), one detail that both a and b
name — a number, a member of a closed class (a country, a city, an app, an agency, a language,
a food...), an operation or its opposite (on / off, upload / download, add / remove), a
direction (from X to Y), "with" / "without", a negated "why" — is swapped in b for another
member of its class: (a, b') is b's rewording but for that one detail, label 0. Only details a
names too (the same member, in any of its spellings) are swapped: a detail b adds on its own
may not decide anything, and swapping it would label a rewording as a near-miss.

Deterministic: the detail and the alternative are drawn from a generator seeded with --seed and
the pair's text. The output has the pair sets' format ("paraphrases": the rewordings the swaps
came from, "near_misses": the swaps, each with "differs" and "swap": "old -> new").
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "bench" / "data"


def _everyday() -> Any:
    """llm/cache/everyday.py read on its own: the package's __init__ needs Django's settings."""
    spec = importlib.util.spec_from_file_location("everyday", REPO / "llm/cache/everyday.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


COUNTRIES: dict[str, str] = _everyday().COUNTRIES  # the check's own class of countries

# Closed classes: each a list of members, each member a list of spellings that mean it (the
# first is used when a member replaces another whose spelling index it lacks). A member is never
# a synonym of another member of its class.
_NATIONS = sorted({c for c in COUNTRIES.values() if c not in ("europe", "asia", "africa")})
_ADJECTIVES = sorted(a for a, c in COUNTRIES.items() if c not in ("europe", "asia", "africa"))


def _members(words: str) -> list[list[str]]:
    """Space-separated members, each "spelling|spelling"."""
    return [m.replace("_", " ").split("|") for m in words.split()]


CLASSES: dict[str, list[list[str]]] = {
    "country": [
        [c] + [a for a, n in COUNTRIES.items() if n == c]
        for c in _NATIONS
        if c not in ("usa", "uk", "korea")
    ]
    + _members(
        "singapore new_zealand peru chile colombia philippines malaysia croatia south_africa "
        "south_korea|korea the_netherlands|netherlands"
    ),
    "language": _members(
        "english french spanish german italian portuguese japanese chinese|mandarin korean "
        "russian arabic hindi dutch greek turkish polish swedish thai vietnamese"
    ),
    "city": _members(
        "london paris new_york|nyc tokyo berlin rome madrid barcelona amsterdam dublin edinburgh "
        "manchester sydney melbourne toronto vancouver chicago los_angeles|la san_francisco "
        "seattle boston miami bangkok hong_kong seoul beijing shanghai delhi mumbai dubai "
        "istanbul lisbon prague vienna munich athens cairo montreal las_vegas orlando denver "
        "austin atlanta kyoto osaka"
    ),
    "us state": _members(
        "california texas florida new_york_state washington_state oregon arizona nevada "
        "colorado ohio michigan illinois georgia virginia massachusetts pennsylvania "
        "new_jersey north_carolina utah minnesota"
    ),
    "programming language": _members(
        "python javascript|js java ruby rust php typescript|ts kotlin swift c++ c# golang "
        "bash powershell"
    ),
    "computer": _members("windows mac|macos|macbook linux|ubuntu chromebook"),
    "phone": _members("iphone|ios android ipad|ipados"),
    "app": _members(
        "whatsapp telegram imessage instagram facebook tiktok snapchat "
        "twitter linkedin youtube reddit pinterest gmail outlook chrome firefox safari zoom "
        "microsoft_teams slack skype discord spotify netflix hulu excel google_sheets "
        "microsoft_word google_docs "
        "powerpoint dropbox google_drive onedrive icloud paypal venmo zelle revolut uber lyft "
        "amazon ebay etsy airbnb github gitlab docker kubernetes jira trello "
        "photoshop canva vs_code|vscode vim emacs wordpress shopify"
    ),
    "agency": _members(
        "irs dmv ssa|social_security uscis tsa fbi fda cdc hmrc dvla nhs passport_office "
        "usps ups fedex dhl royal_mail"
    ),
    "brand": _members(
        "toyota honda ford tesla bmw audi volkswagen|vw nissan hyundai kia volvo mercedes "
        "samsung google apple microsoft sony nintendo xbox playstation|ps5 kindle fitbit "
        "garmin airpods roku"
    ),
    "currency": _members(
        "dollar|dollars|usd euro|euros|eur pound|pounds|gbp yen|jpy rupee|rupees peso|pesos "
        "bitcoin|btc"
    ),
    "food": _members(
        "chicken beef pork lamb salmon tuna shrimp|prawns tofu rice pasta quinoa potatoes "
        "bread eggs|egg milk butter cheese yogurt|yoghurt coffee tea beer wine vodka apples "
        "bananas oranges strawberries blueberries avocados tomatoes carrots broccoli spinach "
        "onions garlic ginger honey sugar flour oats chocolate peanuts almonds"
    ),
    "animal": _members(
        "dog|dogs cat|cats rabbit|rabbits hamster|hamsters parrot horse|horses puppy|puppies "
        "kitten|kittens goldfish chickens"
    ),
    "material": _members("gold silver copper iron steel aluminium|aluminum plastic glass wood"),
    "planet": _members("mercury venus mars jupiter saturn neptune uranus pluto"),
    "sport": _members(
        "football soccer basketball tennis golf cricket rugby baseball hockey running "
        "swimming cycling yoga pilates boxing skiing"
    ),
    "instrument": _members("guitar piano violin drums ukulele cello saxophone flute"),
    "colour": _members("red blue green yellow black white purple orange pink"),
    "month": _members(
        "january february march april june july august september october november december"
    ),
    "weekday": _members("monday tuesday wednesday thursday friday saturday sunday"),
    "season": _members("spring summer autumn|fall winter"),
    "unit": _members(
        "kg|kilograms|kilogram|kilos pounds|lbs|lb grams|g ounces|oz km|kilometers|kilometres "
        "miles|mi metres|meters|m feet|ft inches|in cups|cup litres|liters|l gallons|gallon "
        "celsius|c fahrenheit|f mb|megabytes gb|gigabytes"
    ),
    "degree": _members("bachelor's|bachelors master's|masters phd|doctorate associate's diploma"),
    "meal": _members("breakfast lunch dinner"),
    "family": _members(
        "mother|mom|mum father|dad sister brother grandmother|grandma grandfather|grandpa "
        "aunt uncle cousin daughter son wife husband"
    ),
    "body": _members(
        "knee|knees shoulder|shoulders neck ankle|ankles wrist|wrists hip|hips elbow ear|ears "
        "tooth|teeth"
    ),
}

# Operations and their opposites or siblings, as verbs (matched inflected: -s, -ed, -ing).
OPERATIONS: list[list[list[str]]] = [
    _members("enable|turn_on|switch_on|activate disable|turn_off|switch_off|deactivate"),
    _members("install uninstall|remove"),
    _members("upload download"),
    _members("import export"),
    _members("encrypt decrypt"),
    _members("compress|zip decompress|unzip|extract"),
    _members("lock unlock"),
    _members("mute unmute"),
    _members("block unblock"),
    _members("follow unfollow"),
    _members("subscribe unsubscribe|cancel_my_subscription"),
    _members("increase|raise|boost decrease|lower|reduce"),
    _members("buy|purchase sell"),
    _members("lend borrow"),
    _members("send receive"),
    _members("deposit withdraw"),
    _members("start|begin stop"),
    _members("join leave"),
    _members("sign_in|log_in|login sign_out|log_out|logout"),
    _members("connect disconnect"),
    _members("add remove|delete"),
    _members("archive delete"),
    _members("merge split"),
    _members("encode decode"),
    _members("upgrade downgrade"),
    _members("freeze thaw|defrost"),
    _members("bake roast grill fry boil steam microwave"),
    _members("multiply divide add subtract"),
    _members("print scan"),
    _members("rent buy"),
    _members("pause resume"),
    _members("allow block"),
]
_IRREGULAR = {
    "buy": "bought",
    "sell": "sold",
    "send": "sent",
    "lend": "lent",
    "freeze": "froze",
    "begin": "began",
    "split": "split",
    "leave": "left",
    "grill": "grilled",
    "fry": "fried",
}
OPPOSITES: list[list[list[str]]] = [
    _members("square_root|sqrt square|squared cube_root cube|cubed"),
    _members("sum|total average median"),
    _members("maximum|max minimum"),
    _members("ascending descending"),
    _members("before after"),
    _members("above below"),
    _members("upstairs downstairs"),
    _members("incoming outgoing"),
    _members("inbound outbound"),
    _members("clockwise counterclockwise|anticlockwise"),
    _members("first last"),
    _members("with without"),
    _members("more fewer|less"),
    _members("increase decrease"),
    _members("heads tails"),
    _members("public private"),
    _members("online offline"),
    _members("uppercase|upper_case lowercase|lower_case"),
    _members("horizontal vertical"),
    _members("inside outside|outdoors"),
    _members("wired wireless"),
    _members("domestic international"),
    _members("arrival|arrivals departure|departures"),
]

_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()
_NUMBER = re.compile(r"(?<![\w/:.,$£€-])(\d+(?:\.\d+)?)(?![\w/:]|\.\d)")
_WHY_NEGATION = {
    "do": "don't",
    "does": "doesn't",
    "is": "isn't",
    "are": "aren't",
    "can": "can't",
    "did": "didn't",
    "will": "won't",
    "would": "wouldn't",
    "should": "shouldn't",
}
_WHY = re.compile(
    r"\bwhy (" + "|".join(sorted({*_WHY_NEGATION, *_WHY_NEGATION.values()}, key=len)[::-1]) + r")\b"
)
_FROM_TO = re.compile(r"\bfrom (\w+(?: \w+)?) (to|into) (\w+(?: \w+)?)\b")


def _inflections(verb: str) -> list[str]:
    """base, -s, -ed, -ing of a verb (or of a phrase's first word)."""
    head, _, tail = verb.partition(" ")
    tail = f" {tail}" if tail else ""
    if head in _IRREGULAR:
        past = _IRREGULAR[head]
    elif head.endswith("e"):
        past = head + "d"
    elif head.endswith("y") and head[-2:-1] not in "aeiou":
        past = head[:-1] + "ied"
    elif re.fullmatch(r".*[^aeiou][aeiou][pgtn]", head) and not head.endswith(("en", "ow")):
        past = head + head[-1] + "ed"
    else:
        past = head + "ed"
    if head.endswith("ie"):
        ing = head[:-2] + "ying"
    elif head.endswith("e") and not head.endswith("ee"):
        ing = head[:-1] + "ing"
    elif re.fullmatch(r".*[^aeiou][aeiou][pgtn]", head) and not head.endswith(("en", "ow")):
        ing = head + head[-1] + "ing"
    else:
        ing = head + "ing"
    if head.endswith(("s", "sh", "ch", "x", "z")):
        third = head + "es"
    elif head.endswith("y") and head[-2:-1] not in "aeiou":
        third = head[:-1] + "ies"
    else:
        third = head + "s"
    return [head + tail, third + tail, past + tail, ing + tail]


Class = tuple[str, list[list[list[str]]], "re.Pattern[str]", dict[str, tuple[int, int, int]]]


def _all_classes() -> list[Class]:
    """(class name, members as [spelling][form], one pattern of every form, form -> (member,
    spelling, form)): nouns have one form, verbs four."""
    grouped: list[tuple[str, list[list[list[str]]]]] = []
    for name, members in CLASSES.items():
        grouped.append((name, [[[s] for s in m] for m in members]))
    for members in OPERATIONS:
        grouped.append(("operation", [[_inflections(s) for s in m] for m in members]))
    for members in OPPOSITES:
        grouped.append(("opposite", [[[s] for s in m] for m in members]))
    out: list[Class] = []
    for name, members in grouped:
        where: dict[str, tuple[int, int, int]] = {}
        for m, spellings in enumerate(members):
            for s, forms in enumerate(spellings):
                for f, form in enumerate(forms):
                    where.setdefault(form, (m, s, f))
        # Longest first, so "square root" is found where "square" would be.
        alternatives = "|".join(re.escape(w) for w in sorted(where, key=len, reverse=True))
        out.append(
            (name, members, re.compile(rf"(?<![\w+#'])(?:{alternatives})(?![\w+#]|'\w)"), where)
        )
    return out


_CLASSES = _all_classes()


def _find(text: str, phrase: str) -> list[re.Match[str]]:
    return list(re.finditer(rf"(?<![\w+#']){re.escape(phrase)}(?![\w+#]|'\w)", text))


def _shape(new: str, old: str) -> str:
    """`new` written as `old` is (all capitals, a capital first, or lower case)."""
    if old.isupper() and len(old) > 1:
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _said(
    text: str, pattern: re.Pattern[str], where: dict[str, tuple[int, int, int]]
) -> dict[int, list[tuple[int, int, int]]]:
    """member index -> (spelling, form, match start) of each member of a class in `text`."""
    found: dict[int, list[tuple[int, int, int]]] = {}
    for hit in pattern.finditer(text.casefold()):
        m, s, f = where[hit.group()]
        found.setdefault(m, []).append((s, f, hit.start()))
    return found


def candidates(a: str, b: str) -> list[tuple[str, str, str]]:
    """(class, b with one detail swapped, "old -> new") for each detail both a and b name."""
    out: list[tuple[str, str, str]] = []
    lowered_b = b.casefold()
    for name, members, pattern, where in _CLASSES:
        in_a, in_b = _said(a, pattern, where), _said(b, pattern, where)
        for m in in_a.keys() & in_b.keys():
            named_elsewhere = set(in_a) | set(in_b)
            for s, f, start in in_b[m]:
                old = members[m][s][f]
                if old in ("us", "in", "m", "g", "l", "c", "f", "x", "la", "ts", "js", "mi"):
                    if not b[start : start + len(old)].isupper():
                        continue  # a word, not the unit or place
                for other, spellings in enumerate(members):
                    if other in named_elsewhere:
                        continue
                    forms = spellings[s] if s < len(spellings) else spellings[0]
                    new = forms[f] if f < len(forms) else forms[0]
                    swapped = (
                        b[:start] + _shape(new, b[start : start + len(old)]) + b[start + len(old) :]
                    )
                    if swapped.casefold() != lowered_b:
                        out.append((name, swapped, f"{old} -> {new}"))
    out += _numbers(a, b)
    out += _directions(a, b)
    out += _negations(a, b)
    return out


def _value(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def _numbers(a: str, b: str) -> list[tuple[str, str, str]]:
    """A number both name (as digits, or a small one as a word), changed in b."""
    in_a = {_value(m.group(1)) for m in _NUMBER.finditer(a)}
    in_a |= {float(i) for i, w in enumerate(_NUMBER_WORDS) if _find(a.casefold(), w)}
    out = []
    for hit in _NUMBER.finditer(b):
        value = _value(hit.group(1))
        if value is None or value not in in_a:
            continue
        token = hit.group(1)
        if "." in token:
            new = f"{value * 2:g}" if value < 10 else f"{value + 1:g}"
        elif 1900 <= value <= 2100:
            new = str(int(value) + 1)
        elif value < 12:
            new = str(int(value) + 1)
        elif value < 100:
            new = str(int(value) + 5 if int(value) % 10 else int(value) + 10)
        else:
            new = str(int(value) * 2)
        out.append(("number", b[: hit.start(1)] + new + b[hit.end(1) :], f"{token} -> {new}"))
    lowered = b.casefold()
    for i, word in enumerate(_NUMBER_WORDS[1:], 1):
        if float(i) in in_a:
            for hit in _find(lowered, word):
                new = _NUMBER_WORDS[i + 1] if i + 1 < len(_NUMBER_WORDS) else "twenty"
                swapped = (
                    b[: hit.start()] + _shape(new, b[hit.start() : hit.end()]) + b[hit.end() :]
                )
                out.append(("number", swapped, f"{word} -> {new}"))
    return out


def _directions(a: str, b: str) -> list[tuple[str, str, str]]:
    """ "from X to Y" said in both (X and Y named in a too), turned round in b."""
    out = []
    lowered_a = a.casefold()
    for hit in _FROM_TO.finditer(b.casefold()):
        x, y = hit.group(1), hit.group(3)
        if x == y or not (_find(lowered_a, x) and _find(lowered_a, y)):
            continue
        turned = b[: hit.start()] + f"from {y} {hit.group(2)} {x}" + b[hit.end() :]
        out.append(("direction", turned, f"from {x} to {y} -> from {y} to {x}"))
    return out


def _negations(a: str, b: str) -> list[tuple[str, str, str]]:
    """A "why" question negated (or the negation dropped) in b, when a asks why too."""
    if not _WHY.search(a.casefold()):
        return []
    flip = {**_WHY_NEGATION, **{v: k for k, v in _WHY_NEGATION.items()}}
    out = []
    for hit in _WHY.finditer(b.casefold()):
        old = hit.group(1)
        new = flip[old]
        swapped = b[: hit.start(1)] + new + b[hit.end(1) :]
        out.append(("negation", swapped, f"why {old} -> why {new}"))
    return out


def rewordings(without: set[str]) -> list[tuple[str, str, str]]:
    """(file stem, a, b) of every rewording of the tuning and training sets but `without`."""
    out: list[tuple[str, str, str]] = []
    for path in sorted((DATA / "tuning").glob("*.json")) + sorted(
        (DATA / "training").glob("*.json")
    ):
        if path.stem in without:
            continue
        data = json.loads(path.read_text())
        blocks = [data] + [data[k] for k in ("held_out", "held_out_2") if k in data]
        for block in blocks:
            out += [(path.stem, p["a"], p["b"]) for p in block.get("paraphrases", [])]
    return out


def swaps(without: set[str], seed: int, per_pair: int) -> dict[str, Any]:
    """Up to `per_pair` swaps of distinct classes per rewording, drawn deterministically."""
    paraphrases: list[dict[str, Any]] = []
    near: list[dict[str, Any]] = []
    written = {(a.casefold(), b.casefold()) for _, a, b in rewordings(set())}
    for stem, a, b in rewordings(without):
        found = candidates(a, b)
        if not found:
            continue
        digest = hashlib.sha256(f"{seed}\n{a}\n{b}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        rng.shuffle(found)
        used: set[str] = set()
        kept = 0
        for name, swapped, what in found:
            if kept >= per_pair or name in used or (a.casefold(), swapped.casefold()) in written:
                continue
            used.add(name)
            kept += 1
            near.append({"a": a, "b": swapped, "differs": name, "swap": what, "from": stem})
        paraphrases.append({"a": a, "b": b, "kind": "swapped", "from": stem})
    return {
        "about": "Generated by bench/judge_swaps.py (deterministic): rewordings of the pair "
        f"sets but {sorted(without)} with one detail both sides name swapped in b (near-misses), "
        "and the rewordings they came from. Hard negatives for the judge; never a tuning set.",
        "paraphrases": paraphrases,
        "near_misses": near,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--without", action="append", default=[], help="a set to leave out")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--per-pair", type=int, default=1, help="swaps per rewording, at most")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--show", type=int, default=0, help="print this many, drawn at random")
    args = parser.parse_args()
    data = swaps(set(args.without), args.seed, args.per_pair)
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    counts = Counter(p["differs"] for p in data["near_misses"])
    print(
        f"{len(data['near_misses'])} swaps from {len(data['paraphrases'])} rewordings: "
        + ", ".join(f"{k} {n}" for k, n in counts.most_common())
    )
    rng = random.Random(args.seed)
    for p in rng.sample(data["near_misses"], min(args.show, len(data["near_misses"]))):
        print(f"  [{p['differs']}: {p['swap']}] {p['a']!r} / {p['b']!r}")


if __name__ == "__main__":
    main()
