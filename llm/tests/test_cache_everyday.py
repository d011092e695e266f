"""Everyday vocabulary the matcher reads (llm/cache/everyday.py): phrasal verbs, synonyms
WordNet lacks, written-out abbreviations, country adjectives, fractions and dozens, more
translation shapes, and the person a "be" opening asks about. Each rule: what it must match,
and what it must still refuse. Examples are our own, not the benchmark's pairs."""

from __future__ import annotations

from django.conf import settings

from llm.cache.lexical.profile import profile
from llm.cache.lexical.verdict import match, same_question


def same(a: str, b: str) -> str:
    """ "" when the lexical check finds `a` and `b` ask the same, else why not."""
    return same_question(profile(b), profile(a))


def refused(stored: str, asked: str) -> str:
    """Why `asked` is not answered with `stored`'s answer even at a cosine similarity of 0.99."""
    return match(profile(asked), profile(stored), 0.99, settings.CACHE_SEMANTIC_THRESHOLD)


def test_phrasal_verb_matches_the_verb_it_means():
    assert same("how do i hand in my dissertation", "how do i submit my dissertation") == ""
    assert same("how long to get over a cold", "how long to recover from a cold") == ""
    assert same("how do i fill in a tax return", "how do i complete a tax return") == ""
    assert same("what if the courier never shows up", "what if the courier never arrives") == ""


def test_phrasal_verb_with_its_object_between_matches():
    assert same("can i throw it away, the old router", "can i discard the old router") == ""


def test_phrasal_verb_never_matches_another_action_or_object():
    assert refused("how do i hand in my dissertation", "how do i print my dissertation")
    assert refused("how long to get over a cold", "how long to get over jet lag")
    assert refused("how to help a toddler fall asleep", "how to help a toddler stay asleep")


def test_everyday_synonyms_wordnet_lacks_match():
    assert same("are daffodils toxic to dogs", "are daffodils poisonous to dogs") == ""
    assert same("is it rude to text at dinner", "is it impolite to text at dinner") == ""
    assert same("how should i keep fresh ginger", "how should i store fresh ginger") == ""
    assert same("is it illegal to drink in public", "is it unlawful to drink in public") == ""


def test_everyday_synonym_never_pairs_another_word():
    assert refused("are daffodils toxic to dogs", "are daffodils toxic to horses") == "content"
    assert refused("is it rude to text at dinner", "is it illegal to text at dinner")
    assert refused("how should i keep fresh ginger", "how should i grow fresh ginger")


def test_is_it_ok_to_asks_whether_it_is_safe():
    assert same("is it ok to swim after eating", "is it safe to swim after eating") == ""
    assert same("is it okay for dogs to eat rice", "ok for dogs to eat rice?") == ""
    assert refused("is it ok to swim after eating", "is it healthy to swim after eating")


def test_written_out_abbreviation_matches_its_short_form():
    assert same("best diy shelves", "best do-it-yourself shelves") == ""
    assert same("is otc ibuprofen strong", "is over the counter ibuprofen strong") == ""
    assert same("how many tsp in a tbsp", "how many teaspoons in a tablespoon") == ""
    assert same("what is the drinking age in the us", "drinking age in the united states") == ""
    assert same("is healthcare free in britain", "is healthcare free in the uk") == ""
    assert same("how do i renew a driver's license", "how do i renew a driving licence") == ""


def test_written_out_abbreviation_keeps_units_places_and_direction_apart():
    assert refused("how many tsp in a tbsp", "how many tbsp in a tsp") == "direction"
    assert refused("drinking age in the us", "drinking age in the uk") in ("content", "alternative")
    assert refused("how much paint for 100 sq ft", "how much paint for 100 square metres")


def test_country_adjective_matches_the_country():
    assert same("speed limit on french motorways", "speed limit on motorways in france") == ""
    assert refused("speed limit on french motorways", "speed limit on motorways in spain")


def test_fractions_and_dozens_are_numbers():
    assert same("calories in 1/2 cup of oats", "calories in half a cup of oats") == ""
    assert same("how long to boil a dozen eggs", "how long to boil 12 eggs") == ""
    assert same("recipe for half a dozen scones", "recipe for 6 scones") == ""
    assert refused("calories in 1/2 cup of oats", "calories in 1/4 cup of oats")
    assert refused("how long to boil a dozen eggs", "how long to boil half a dozen eggs")


def test_age_written_short_is_years_old():
    assert same("can a 3yo eat honey", "can a 3 year old eat honey") == ""
    assert refused("can a 3yo eat honey", "can a 4 year old eat honey") == "numbers"


def test_translation_shapes_match_and_keep_their_language():
    assert same("good morning in norwegian", "how do you say good morning in norwegian") == ""
    assert same("see you tomorrow in dutch", "translate see you tomorrow into dutch") == ""
    assert same("italian for how much is this", "translate how much is this into italian") == ""
    assert same("what does merci mean", "translate merci to english") == ""
    assert same("how would i write good luck in greek", "good luck in greek") == ""
    assert refused("good morning in norwegian", "good morning in swedish")
    assert refused("what does merci mean", "translate merci to german")


def test_a_be_opening_names_its_person_by_pronoun():
    assert refused("are we allowed to park here", "are they allowed to park here") == "subject"
    # A thing after "is my" is no other person: the rule does not read it.
    assert profile("is my dog overweight").subject == ""


def test_make_is_cook_bake_or_earn_but_those_stay_apart():
    assert same("how do i make couscous", "how do i cook couscous") == ""
    assert same("how do i make rye bread", "how do i bake rye bread") == ""
    assert same("how much does a pilot make", "how much does a pilot earn") == ""
    assert refused("how long to cook a salmon fillet", "how long to bake a salmon fillet")


def test_everyday_synonym_is_read_from_the_word_said():
    # "update" is compared as "change", which "replace" means; "update" does not.
    assert same("how often should i replace my tyres", "how often should i change my tyres") == ""
    assert refused("how often should i replace my phone", "how often should i update my phone")


def test_least_expensive_is_cheapest():
    assert same("cheapest way to ship a bike", "least expensive way to ship a bike") == ""
    assert refused("cheapest way to ship a bike", "fastest way to ship a bike")


def test_acronym_may_skip_per():
    assert same("what tyre pressure in psi", "what tyre pressure in pounds per square inch") == ""
    assert refused("what tyre pressure in psi", "what tyre pressure in bar") == "content"


def test_set_phrases_of_things_bought_and_people():
    assert same("is a second-hand laptop worth it", "is a used laptop worth it") == ""
    assert same("learning piano as a grown-up", "learning piano as an adult") == ""
    assert refused("is a second-hand laptop worth it", "is a new laptop worth it")


def test_product_is_named_with_or_without_its_maker():
    assert same("how do i clear history in google chrome", "how do i clear history in chrome") == ""
    assert refused("how do i clear history in chrome", "how do i clear history in firefox")


def test_weekday_short_form_after_on():
    assert same("is the library open on sat", "is the library open on saturday") == ""
    assert refused("is the library open on sat", "is the library open on sunday") in (
        "content",
        "alternative",
    )


def test_travel_words_wordnet_lacks():
    assert same("how to post a parcel overseas", "how to post a parcel abroad") == ""
    assert same("can i change my hotel booking", "can i change my hotel reservation") == ""
    assert refused("can i change my hotel booking", "can i change my flight booking")


def test_ways_of_asking_how_and_whether():
    assert same("how do i repot an orchid", "guide to repotting an orchid") == ""
    assert same("how do i know if my hamster is sick", "signs my hamster is ill") == ""
    assert same("how do i calculate a loan repayment", "formula for a loan repayment") == ""
    assert same("at what age can kids use a trampoline", "when can kids use a trampoline") == ""
    assert same("what resting heart rate is considered low", "what resting heart rate is low") == ""
    assert same("how to tell if milk has gone off", "how to know if milk is bad") == ""
    assert refused("how do i know if my hamster is sick", "how do i know if my hamster is bored")
    assert refused("guide to repotting an orchid", "guide to watering an orchid")


def test_get_a_thing_off_a_surface_is_remove_it_but_a_day_off_is_not():
    assert same("how to get gum off shoes", "how to remove gum from shoes") == ""
    assert refused("how to get gum off shoes", "how to get gum off a carpet") == "content"
    assert "remove" not in profile("how can i get a day off work").content
