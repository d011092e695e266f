"""Quantity words: "one list" and "all lists" ask different things."""

from __future__ import annotations

from llm.cache.lexical.profile import Profile, canonical_of, lemma_of


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
        if quantity in {"all", "both", "many"} and said and not all(said):
            return True  # "all my photos" / "a photo", also beside "Google Photos"
        if (
            quantity in _SINGLING
            and noun
            and not said
            and canonical_of(noun) not in other.content
            and "1" not in other.words  # "one pound per square inch" / "1 psi": a number
        ):
            # "mute one person in a group chat" / "mute a group chat": one side counts out a
            # thing the other never names, so it asks about a part, not the whole.
            return True
    return False


# Quantities that single out members of what the rest of the question names.
_SINGLING = frozenset({"one", "each"})
