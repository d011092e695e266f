"""Quantity words: "one list" and "all lists" ask different things."""

from __future__ import annotations

from llm.cache.lexical.profile import Profile, lemma_of


def other_quantity(a: Profile, b: Profile) -> bool:
    """Does `b` count a thing `a` counts otherwise? Two quantity words of different classes
    ("one" / "all"), or one side's "one" where the other says the noun in the plural, or its
    "all"/"both"/"many" where the other says the noun in the singular."""
    classes_a = {q for q, _, _ in a.quantities}
    classes_b = {q for q, _, _ in b.quantities}
    if classes_a and classes_b:
        return classes_a != classes_b
    counted, other = (a, b) if classes_a else (b, a)
    for quantity, noun, _ in counted.quantities:
        said = [lemma_of(w) != w for w in other.words if noun and lemma_of(w) == noun]
        if quantity == "one" and any(said):
            return True
        if quantity in {"all", "both", "many"} and said and not any(said):
            return True
    return False
