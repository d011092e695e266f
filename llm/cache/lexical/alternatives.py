"""Closed classes of alternatives: a month, a season, a compass point, a country, a unit, a
stretch of time, an age or sex, one end of a scale, all or most or any, the average or the
median. Two questions that each name a member of one class the other does not ("visit Thailand
in May" / "travel to Vietnam in August", "calcium for women" / "for men", "the coldest month" /
"the warmest", "square metres" / "square feet") ask for different answers, however freely the
rest is reworded: a hard refusal, so neither the check's second look nor the judge (which scores
such pairs like rewordings) may overrule it.

Words are compared as the check's content words (lemmas, units spelled out: llm/cache/lexicon.py);
members that mean the same share a name ("kid" / "child", "big" / "large"). Words with a
common second meaning are left out ("may", "fall", "light", "new"), and so are "good" / "bad"
("is this egg still good" asks what "has it gone bad" asks)."""

from __future__ import annotations

from llm.cache.everyday import COUNTRIES
from llm.cache.lexical.profile import Profile, lemma_of

_CLASSES: dict[str, dict[str, str]] = {
    "month": {
        m: m
        for m in (
            "january february march april june july august september october november december"
        ).split()
    },
    "weekday": {d: d for d in "monday tuesday wednesday thursday friday saturday sunday".split()},
    "season": {"spring": "spring", "summer": "summer", "autumn": "autumn", "winter": "winter"},
    "compass": {
        "north": "north",
        "northern": "north",
        "south": "south",
        "southern": "south",
        "east": "east",
        "eastern": "east",
        "west": "west",
        "western": "west",
    },
    "country": {**{c: c for c in COUNTRIES.values()}, **COUNTRIES},
    "time": {u: u for u in "second minute hour day week month year decade century".split()}
    | {"annual": "year"},
    "unit": {
        u: u
        for u in (
            "metre foot inch centimetre millimetre kilometre mile yard gram kilogram ounce "
            "stone litre millilitre gallon pint cup tablespoon teaspoon celsius fahrenheit "
            "kelvin acre hectare"
        ).split()
    }
    | {"mile hour": "mph", "kilometre hour": "kph", "mph": "mph", "kph": "kph"},
    # Decimal and binary sizes are other units: 5 GB is not 5 GiB.
    "data": {
        u: u
        for u in (
            "bit byte kilobyte megabyte gigabyte terabyte petabyte kibibyte mebibyte gibibyte "
            "tebibyte"
        ).split()
    }
    | {"kib": "kibibyte", "mib": "mebibyte", "gib": "gibibyte", "tib": "tebibyte"},
    # How many of a group: "do all planets have moons" / "do most planets".
    "share": {
        "all": "all",
        "every": "all",
        "each": "all",
        "most": "most",
        "any": "any",
        "alternate": "alternate",
    },
    # The other end of an amount: "burns the most calories" / "the fewest".
    "amount": {"most": "many", "fewest": "few", "least": "few"},
    # Code's operators as the check spells them (llm/cache/lexicon.py).
    "operator": {
        w: w for w in ("equality", "identity", "inequality", "conjunction", "disjunction")
    },
    # Which middle: the average (mean) of a column is not its median.
    "middle": {"average": "average", "median": "median"},
    "person": {
        "man": "man",
        "male": "man",
        "woman": "woman",
        "female": "woman",
        "lady": "woman",
        "boy": "boy",
        "girl": "girl",
        "baby": "baby",
        "infant": "baby",
        "newborn": "baby",
        "toddler": "toddler",
        "child": "child",
        "kid": "child",
        "teenager": "teen",
        "teen": "teen",
        "adolescent": "teen",
        "adult": "adult",
        "senior": "senior",
        "elderly": "senior",
        "pensioner": "senior",
    },
    # One end of a scale: "the largest" / "the smallest country", "the coldest" / "the warmest".
    "size": {"big": "big", "large": "big", "huge": "big", "small": "small", "tiny": "small"},
    "length": {"long": "long", "short": "short"},
    "height": {"high": "high", "tall": "high", "low": "low"},
    "temperature": {"cold": "cold", "cool": "cold", "warm": "hot", "hot": "hot"},
    "speed": {"fast": "fast", "quick": "fast", "slow": "slow"},
    "price": {"cheap": "cheap", "expensive": "expensive", "costly": "expensive"},
    "age": {"old": "old", "young": "young"},
    "timing": {"early": "early", "late": "late"},
}


# Members read as they are said, not as their lemma ("fewest" is "few", a word of every kind).
_AS_SAID = frozenset({"fewest", "least"})


def _members(profile: Profile) -> dict[str, set[str]]:
    """Each class's members the question names: its content words, the words that only frame
    it ("the longest day of the year": "day", "year") as lemmas, and the adjectives it grades."""
    said = {
        *profile.content,
        *map(lemma_of, profile.words),
        *(adj for adj, _ in profile.degrees),
        *(word for word in profile.words if word in _AS_SAID),
    }
    found: dict[str, set[str]] = {}
    for word in said:
        for name, members in _CLASSES.items():
            if word in members:
                found.setdefault(name, set()).add(members[word])
    return found


def other_alternative(a: Profile, b: Profile) -> str:
    """The class in which each question names a member the other does not, or ""."""
    of_a, of_b = _members(a), _members(b)
    for name in of_a.keys() & of_b.keys():
        if of_a[name] - of_b[name] and of_b[name] - of_a[name]:
            return name
    return ""
