"""Order, direction and comparisons: two questions with the same words may ask opposite things
("convert PDF to Word" / "convert Word to PDF", "London ahead of New York" / the reverse)."""

from __future__ import annotations

from llm.cache.lexical.profile import Profile, lemma_of
from llm.cache.lexicon import STOPWORDS


def reversed_order(a: Profile, b: Profile) -> bool:
    """Does `b` put around a directional word, in the other order, two things `a` relates?
    ("convert PDF to Word" / "convert Word to PDF", "10 USD in EUR" / "10 EUR in USD"), make
    the source of a move its target ("from savings to checking" / "from checking into
    savings", whatever words mark them), or compare with the reference the other way round
    ("how far ahead of New York is London" / "how far is New York ahead of London")?"""
    if any((after, before) in b.directions and before != after for before, after in a.directions):
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


_ARTICLES = frozenset({"a", "an", "the"})
# A verb moved in an embedded question changes nothing: "what is Docker" / "(tell me) what
# Docker is", "is it" / "it is".
_AUXILIARIES = frozenset("is are was were do does did can could will would should has have".split())


def swapped(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Is `b` exactly `a` with two words or word groups exchanged around the same words ("dog
    chases cat" / "cat chases dog", "ahead of New York is London" / "ahead of London is New
    York"), not counting an auxiliary verb moved?
    Articles are left out first: "a crocodile … an alligator" swaps to "an alligator … a
    crocodile", and words are compared as lemmas: "dollars for 1 euro" swaps to "euros for 1
    dollar"."""
    a = tuple(word for word in a if word not in _ARTICLES)
    b = tuple(word for word in b if word not in _ARTICLES)
    if len(a) != len(b) or a == b:
        return False
    a, b = tuple(map(lemma_of, a)), tuple(map(lemma_of, b))
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
            return True
    return False
