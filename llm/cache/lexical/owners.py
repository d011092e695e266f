"""Whose thing a question is about: "my dog bites someone" / "someone's dog bites me", "me
driving a friend's car" / "a friend driving my car". The same words, so the content check and
the embedding (0.96-0.99) find them alike, and the judge scores them like rewordings; but one
asks about the asker's own thing and the other about someone else's, which needs another
answer. "My" and "your" are the same owner here ("how do I change my PIN" / "how do you change
your PIN")."""

from __future__ import annotations

from llm.cache.lexical.profile import Profile, lemma_of

_ASKERS = frozenset({"my", "your", "our", "mine", "yours", "ours"})
# Someone outside the asker's household: "someone's", "a friend's", "my neighbour's", "his".
# Not "their" (a generic person: "a tenant ... their deposit"), not family ("my child's
# passport" is asked as "my passport for my child") and not things ("my car's oil").
_OUTSIDERS = frozenset(
    """someone somebody else friend neighbour neighbor stranger colleague coworker boss
    roommate flatmate housemate people person other others""".split()
)


def _owner(word: str) -> str:
    """ "asker" or "other" for a word that says whose the next thing is, else ""."""
    if word in _ASKERS:
        return "asker"
    if word in ("his", "her") or (word.endswith("'s") and word[:-2] in _OUTSIDERS):
        return "other"
    if word.endswith("s'") and word[:-1] in _OUTSIDERS | {"friends", "neighbours", "neighbors"}:
        return "other"  # "others' children", "my friends' car"
    return ""


def _owned(profile: Profile) -> dict[str, set[str]]:
    """Each content word said right after an owner ("my own dog", "my neighbour's dog": the
    last owner before it counts), with whose it is."""
    content = set(profile.content)
    owned: dict[str, set[str]] = {}
    pending = ""
    for word in profile.words:
        if owner := _owner(word):
            pending = owner
            continue
        if not pending or word == "own":
            continue
        lemma = lemma_of(word)
        if lemma in content:
            owned.setdefault(lemma, set()).add(pending)
            pending = ""
        elif word not in ("very", "new", "old"):  # an owner reaches past a word or so, no more
            pending = ""
    return owned


def other_owner(a: Profile, b: Profile) -> bool:
    """Does one question say a thing is the asker's where the other says it is someone else's?"""
    of_a, of_b = _owned(a), _owned(b)
    return any(of_a[word] != of_b[word] for word in of_a.keys() & of_b.keys())
