"""The matcher's hard refusals for a question that keeps the other's words but asks about a
part, an audience, a word as a word, a purpose or the other direction; and the judge's gate on
the kind of answer. Examples are our own, not the benchmark's pairs."""

from __future__ import annotations

from django.conf import settings

from llm.cache.lexical.profile import profile
from llm.cache.lexical.verdict import judge_may_overrule, match, same_question


def refused(stored: str, asked: str) -> str:
    """Why `asked` is not answered with `stored`'s answer even at a cosine similarity of 0.99."""
    return match(profile(asked), profile(stored), 0.99, settings.CACHE_SEMANTIC_THRESHOLD)


def test_one_member_of_a_thing_is_not_the_thing():
    # "person" is no compared word: "one" counting it is what tells the part from the whole.
    assert (
        refused("how do I block a conversation", "how do I block one person in a conversation")
        == "quantity"
    )


def test_all_of_a_thing_is_not_one_of_them_beside_a_plural_name():
    assert (
        refused(
            "how do I copy a photo from iCloud Photos",
            "how do I copy all my photos from iCloud Photos",
        )
        == "quantity"
    )


def test_an_audience_after_for_narrows_the_question():
    assert refused("what does the basic plan include", "what does the basic plan include for teams")
    # Where it is asked from still changes nothing.
    assert (
        same_question(
            profile("how do I set up shared folders"),
            profile("how do I set up shared folders for my team"),
        )
        == ""
    )


def test_a_word_asked_about_as_a_word_is_compared_as_typed():
    assert refused("what is the plural of goose", "what's the plural of geese") == "quoted"
    assert refused("should I say who or whom here", "should I say whom or whose here") == "quoted"
    assert (
        same_question(profile("past tense of swim?"), profile("what is the past tense of swim"))
        == ""
    )


def test_what_a_thing_is_used_for_is_not_where_it_is():
    assert (
        refused("Where is the spare key for my car?", "What is the spare key for my car used for?")
        == "question word"
    )


def test_two_phrases_exchanged_around_to_are_the_other_direction():
    assert (
        refused(
            "convert 200c fan oven to a standard oven temperature",
            "convert 200c standard oven to a fan oven temp",
        )
        == "direction"
    )


def test_us_in_capitals_is_the_country():
    assert (
        same_question(
            profile("Can I use my US SIM in Canada?"), profile("can I use my USA SIM in Canada")
        )
        == ""
    )
    assert "usa" in profile("Can I use my US SIM in Canada?").content


def test_the_judge_never_looks_at_another_kind_of_answer():
    saving, who = profile("what is a savings account"), profile("who can open a savings account")
    assert not judge_may_overrule(who, saving, 0.9)
    where, cost = profile("where can I buy a bus pass"), profile("how much is a bus pass")
    assert not judge_may_overrule(cost, where, 0.9)
    assert judge_may_overrule(
        profile("how do I get a bus pass"), profile("how can I obtain a travel card"), 0.9
    )


def test_what_a_thing_covers_is_not_how_much():
    assert (
        refused("what does a boiler warranty cover", "how much does a boiler warranty cover")
        == "question word"
    )
    # A verb whose object is an amount asks the same either way.
    assert (
        same_question(
            profile("what does an electrician charge per hour"),
            profile("how much does an electrician charge per hour"),
        )
        == ""
    )


def test_a_continent_and_a_country_exchanged_are_another_question():
    assert (
        refused("can I use my US charger in Asia", "can I use my Asian charger in the US")
        == "direction"
    )


def test_a_percentage_of_what_asks_for_the_whole_not_the_part():
    assert refused("what is 20% of 150", "150 is 20% of what number") == "question word"
    assert (
        same_question(profile("30 is 20% of what number"), profile("20 percent of what is 30"))
        == ""
    )
