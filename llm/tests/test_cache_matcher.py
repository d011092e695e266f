"""What the semantic cache's matcher treats as the same question (llm/cache/text.py): the
embedding's similarity at the threshold, and the lexical check that reads numbers, negations,
entities, directions and units. Examples are our own, not the benchmark's held-out pairs."""

from __future__ import annotations

from django.conf import settings

from llm.cache.text import match, normalise, profile, same_question
from llm.embeddings import embedder


def similarity(a: str, b: str) -> float:
    va, vb = embedder().embed([normalise(a), normalise(b)])
    return float(va @ vb)


def hits(stored: str, asked: str) -> str:
    """ "" when `asked` is answered with `stored`'s answer at the default threshold, else why
    not."""
    return match(
        profile(asked),
        profile(stored),
        similarity(stored, asked),
        settings.CACHE_SEMANTIC_THRESHOLD,
    )


def refused(stored: str, asked: str) -> str:
    """Why `asked` is not answered with `stored`'s answer even at a cosine similarity of 0.99:
    what blocks a near-miss is the lexical check, not the embedding."""
    return match(profile(asked), profile(stored), 0.99, settings.CACHE_SEMANTIC_THRESHOLD)


def test_percent_sign_and_word_match():
    assert hits("What is 12% of 250?", "What is 12 percent of 250?") == ""


def test_dollar_sign_and_word_match():
    assert (
        hits(
            "Is $300 a fair price for a used bike?", "Is 300 dollars a fair price for a used bike?"
        )
        == ""
    )


def test_digits_and_number_words_match():
    assert (
        same_question(
            profile("Give me 3 tips for sleeping"), profile("Give me three tips for sleeping")
        )
        == ""
    )


def test_other_number_never_hits():
    assert refused("What is 12% of 250?", "What is 12% of 200?") == "numbers"
    assert refused("What is 12 percent of 250?", "What is 15 percent of 250?") == "numbers"


def test_acronym_and_the_words_it_stands_for_match():
    assert (
        same_question(
            profile("What does the NHS cover?"),
            profile("What does the National Health Service cover?"),
        )
        == ""
    )
    assert same_question(profile("What is ROI?"), profile("What is return on investment?")) == ""


def test_acronym_of_other_words_never_hits():
    assert (
        same_question(profile("What is the NBA?"), profile("What is the National Football League?"))
        == "content"
    )


def test_one_word_or_two_match():
    assert (
        same_question(profile("Where is the fire station?"), profile("Where is the firestation?"))
        == ""
    )
    assert (
        same_question(
            profile("How do I reset my user name?"), profile("How do I reset my username?")
        )
        == ""
    )


def test_time_zone_and_timezone_match():
    assert hits("Which time zone is Madrid in?", "Which timezone is Madrid in?") == ""


def test_which_city_is_the_capital_and_what_is_the_capital_match():
    assert hits("Which city is Peru's capital?", "What is the capital of Peru?") == ""


def test_how_do_you_say_and_translate_match():
    assert (
        hits("How do you say 'good luck' in Italian?", "Translate 'good luck' into Italian") == ""
    )


def test_other_language_never_hits():
    assert (
        refused("How do you say 'good luck' in Italian?", "How do you say 'good luck' in Greek?")
        == "content"
    )


def test_other_entity_never_hits():
    assert refused("What is the capital of Peru?", "What is the capital of Chile?") == "content"


def test_negation_never_hits():
    assert (
        refused("Which vegetables can rabbits eat?", "Which vegetables can rabbits not eat?")
        == "negation"
    )


def test_opposite_direction_never_hits():
    assert refused("Convert 20 pounds to kilograms", "Convert 20 kg to pounds") == "direction"
    assert refused("How do I turn on alerts?", "How do I turn off alerts?") == "content"


def test_other_unit_never_hits():
    assert refused("How many seconds in an hour?", "How many minutes in an hour?") == "content"
    assert (
        refused("What is 40 degrees Celsius in Fahrenheit?", "What is 40 °C in Kelvin?")
        == "content"
    )


def test_word_forms_match():
    assert (
        same_question(
            profile("How do I cancel my membership?"),
            profile("Cancellation of my membership, how?"),
        )
        == ""
    )


def test_an_unknown_plural_is_its_singular():
    assert (
        same_question(profile("How do I merge two dicts?"), profile("How do I merge two dict?"))
        == ""
    )


def test_a_greeting_or_thanks_around_a_question_is_ignored():
    assert (
        same_question(
            profile("Hi! How do I export my notes? Thanks"), profile("How do I export my notes?")
        )
        == ""
    )


def test_thanks_asked_about_is_part_of_the_question():
    assert (
        same_question(
            profile("How do you say hello in Dutch?"), profile("How do you say thanks in Dutch?")
        )
        == "content"
    )


def test_the_threshold_still_bounds_a_lexically_equal_question():
    stored, asked = profile("How do I export my notes?"), profile("How can I export my notes?")
    threshold = settings.CACHE_SEMANTIC_THRESHOLD
    assert match(asked, stored, threshold, threshold) == ""
    assert match(asked, stored, threshold - 0.01, threshold) == "similarity"


def test_a_boiling_point_and_the_temperature_something_boils_at_match():
    assert (
        same_question(
            profile("What is the boiling point of milk?"),
            profile("At what temperature does milk boil?"),
        )
        == ""
    )


def test_a_freezing_point_never_answers_a_boiling_point():
    assert refused("What is the boiling point of milk?", "What is the freezing point of milk?")


def test_how_fast_something_travels_is_its_speed():
    assert (
        same_question(
            profile("What is the speed of sound?"), profile("How fast does sound travel?")
        )
        == ""
    )
