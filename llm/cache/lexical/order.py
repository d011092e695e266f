"""Order, direction and comparisons: two questions with the same words may ask opposite things
("convert PDF to Word" / "convert Word to PDF", "London ahead of New York" / the reverse)."""

from __future__ import annotations

from llm.cache.everyday import COUNTRIES
from llm.cache.lexical.profile import Profile, lemma_of
from llm.cache.lexicon import STOPWORDS

_DISTANCE = frozenset({"far", "distance"})


def same_route(a: Profile, b: Profile) -> bool:
    """Do both questions name the same source and the same target, whatever order they say them
    in ("to Rome from Paris, how long is the train" / "the train from Paris to Rome")? Then an
    order the words take is no direction."""
    roles_a, roles_b = set(a.roles), set(b.roles)
    named = {role for role, _ in roles_a}
    # A role holds the first word of its phrase: "from 2.4GHz to 5GHz" names "ghz" both ways,
    # which tells no route.
    told = len({word for _, word in roles_a}) == len(roles_a)
    return {"source", "target"} <= named and told and roles_a == roles_b


def distance_either_way(a: Profile, b: Profile) -> bool:
    """Do both ask how far apart the same two places are ("how far is Boston from NYC" / "how
    far is NYC from Boston")? A distance is the same both ways; "how far ahead of" compares."""
    return (
        bool(_DISTANCE & set(a.words) & set(b.words))
        and not any(role.startswith("reference") for role, _ in a.roles + b.roles)
        and sorted(a.content) == sorted(b.content)
    )


def reversed_order(a: Profile, b: Profile) -> bool:
    """Does `b` put around a directional word, in the other order, two things `a` relates?
    ("convert PDF to Word" / "convert Word to PDF", "10 USD in EUR" / "10 EUR in USD"), make
    the source of a move its target ("from savings to checking" / "from checking into
    savings", whatever words mark them), or compare with the reference the other way round
    ("how far ahead of New York is London" / "how far is New York ahead of London")?"""
    if any((after, before) in b.directions and before != after for before, after in a.directions):
        return True
    if any(_exchanged(x, y) for x in a.spans for y in b.spans):
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


def _exchanged(
    a: tuple[tuple[str, ...], tuple[str, ...]], b: tuple[tuple[str, ...], tuple[str, ...]]
) -> bool:
    """Does a word before "to" in one question stand after it in the other, and one after it
    before ("a fan oven to a conventional oven" / "a conventional oven to a fan oven")?"""
    if sorted(a[0] + a[1]) != sorted(b[0] + b[1]):
        return False  # the same words on the two sides, some of them exchanged
    (before_a, after_a), (before_b, after_b) = (set(a[0]), set(a[1])), (set(b[0]), set(b[1]))
    return bool((before_a - after_a) & (after_b - before_b)) and bool(
        (after_a - before_a) & (before_b - after_b)
    )


_ARTICLES = frozenset({"a", "an", "the"})
# Relations that read the same both ways: "the distance between the earth and the moon", "the
# difference between let and const", "their or there". Only these joints, "and" only after
# "between" ("sort by name and date" is not "by date and name").
_EITHER_WAY = frozenset({("or",), ("vs",), ("versus",)})
_BETWEEN = frozenset({"between"})
# A verb moved in an embedded question changes nothing: "what is Docker" / "(tell me) what
# Docker is", "is it" / "it is".
_AUXILIARIES = frozenset("is are was were do does did can could will would should has have".split())


def swapped(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Is `b` exactly `a` with two words or word groups exchanged around the same words ("dog
    chases cat" / "cat chases dog", "ahead of New York is London" / "ahead of London is New
    York"), not counting an auxiliary verb moved?
    Articles are left out first: "a crocodile … an alligator" swaps to "an alligator … a
    crocodile", and words are compared as lemmas: "dollars for 1 euro" swaps to "euros for 1
    dollar", "European" to "Europe"."""
    a = tuple(word for word in a if word not in _ARTICLES)
    b = tuple(word for word in b if word not in _ARTICLES)
    if len(a) != len(b) or a == b:
        return False
    # A country and its adjective are one place: "my US phone in Europe" / "my European phone
    # in the US".
    a = tuple(COUNTRIES.get(lemma_of(word), lemma_of(word)) for word in a)
    b = tuple(COUNTRIES.get(lemma_of(word), lemma_of(word)) for word in b)
    if a == b:
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
            if _symmetric(a[:start], middle):
                continue
            return True
    return False


def _symmetric(before: tuple[str, ...], middle: tuple[str, ...]) -> bool:
    """Does the joint between two exchanged word groups read the same both ways?"""
    if middle in _EITHER_WAY:
        return True
    return middle == ("and",) and bool(before) and before[-1] in _BETWEEN
