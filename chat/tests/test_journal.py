"""A reply's journal on its own (chat/journal.py): the stored text completed from it."""

from __future__ import annotations

from chat.journal import journal_complete, journal_decode, journal_entry, journal_key

REPLY = "Hello: wörld 👋, again"


def entries(*cuts: tuple[int, int]) -> list[bytes]:
    return [journal_entry(start=start, text=REPLY[start:seq]) for start, seq in cuts]


def test_an_entry_keeps_its_start_and_any_text():
    assert journal_decode(journal_entry(start=12, text="a: b 👋\n")) == (12, "a: b 👋\n")
    assert journal_decode(journal_entry(start=0, text="")) == (0, "")


def test_each_reply_has_its_own_key():
    assert journal_key(7) != journal_key(70)


def test_the_stored_text_is_completed_with_what_was_published_after_it():
    journal = entries((0, 5), (5, 9), (9, 14), (14, 20))
    assert journal_complete(REPLY[:9], journal) == REPLY[:20]
    assert journal_complete("", journal) == REPLY[:20]


def test_a_delta_that_overlaps_the_stored_text_adds_only_what_it_lacks():
    assert journal_complete(REPLY[:7], entries((5, 9), (9, 14))) == REPLY[:14]


def test_a_stored_text_ahead_of_the_journal_is_kept():
    assert journal_complete(REPLY[:14], entries((0, 5), (5, 9))) == REPLY[:14]


def test_a_hole_in_the_journal_ends_the_completion_unless_the_stored_text_covers_it():
    journal = entries((0, 5), (9, 14), (14, 20))  # 5..9 was lost with its publish
    assert journal_complete(REPLY[:3], journal) == REPLY[:5]
    assert journal_complete(REPLY[:10], journal) == REPLY[:20]
