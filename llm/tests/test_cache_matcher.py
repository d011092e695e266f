"""What the semantic cache's matcher treats as the same question (llm/cache/lexical/): the
embedding's similarity at the threshold, and the lexical check that reads numbers, negations,
entities, directions and units. Examples are our own, not the benchmark's held-out pairs."""

from __future__ import annotations

from django.conf import settings

from llm.cache.lexical.profile import profile
from llm.cache.lexical.rewrite import normalise
from llm.cache.lexical.verdict import match, same_question
from llm.cache.synonyms import related_in_any_sense, synonymous
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
    assert refused(
        "How do you say 'good luck' in Italian?", "How do you say 'good luck' in Greek?"
    ) in ("content", "alternative")


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
    assert refused("How many seconds in an hour?", "How many minutes in an hour?") in (
        "content",
        "alternative",
    )
    assert refused("What is 40 degrees Celsius in Fahrenheit?", "What is 40 °C in Kelvin?") in (
        "content",
        "alternative",
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


# --- Issue 18, third round: rules that generalise (each with a hit and a never-hits test) ---

THRESHOLD = 0.6


def test_an_acronym_spelled_out_matches_below_the_threshold():
    """The embedding does not know most acronyms (cosine 0.35-0.45 for "GDPR" and its words);
    when every content word pairs, the lexical check vouches for the pair."""
    stored = profile("What does an SSD do?")
    asked = profile("What does a solid state drive do?")
    assert match(asked, stored, 0.40, THRESHOLD) == ""
    assert (
        match(
            profile("How do I change my PW?"),
            profile("How do I change my password?"),
            0.41,
            THRESHOLD,
        )
        == ""
    )
    assert hits("What is the NHS?", "What is the National Health Service?") == ""  # 0.48
    assert hits("What is an ISP?", "What is an internet service provider?") == ""  # 0.57


def test_below_the_threshold_only_a_spelling_difference_matches():
    # Same words but no abbreviation between them: the threshold still bounds the pair.
    same = profile("How do I export my notes?"), profile("How can I export my notes?")
    assert match(*same, 0.40, THRESHOLD) == "similarity"
    # An acronym that is not the other side's words, and the margin's own floor.
    assert (
        match(
            profile("What does an SSD do?"),
            profile("What does a hard disk drive do?"),
            0.40,
            THRESHOLD,
        )
        == "similarity"
    )
    assert (
        match(
            profile("What does an SSD do?"),
            profile("What does a solid state drive do?"),
            0.29,
            THRESHOLD,
        )
        == "similarity"
    )


def test_chatty_framing_before_a_question_is_ignored():
    stored = profile("How do I rename a folder?")
    for asked in (
        "Hey, quick question: how do I rename a folder?",
        "Could you tell me how I rename a folder?",
        "I was wondering how I rename a folder",
        "I'd like to know how to rename a folder",
    ):
        assert same_question(profile(asked), stored) == "", asked
    assert (
        same_question(
            profile("Do you know whether Python has a switch statement?"),
            profile("Does Python have a switch statement?"),
        )
        == ""
    )


def test_chatty_framing_never_hides_what_is_asked():
    assert "well" in profile("Well water: is it safe to drink?").content
    assert match(profile("Please explain it"), profile("pls tell me something"), 0.4, 0.6) != ""
    assert (
        refused(
            "Could you tell me how to enable dark mode?",
            "Could you tell me how to disable dark mode?",
        )
        == "content"
    )
    assert (
        refused(
            "Quick question: how do I rename a folder?", "Quick question: how do I delete a folder?"
        )
        == "content"
    )


def test_a_verb_moved_in_an_embedded_question_matches():
    assert (
        same_question(
            profile("Can you tell me what Kubernetes is?"), profile("What is Kubernetes?")
        )
        == ""
    )


def test_two_content_words_exchanged_still_never_hit():
    assert refused("Does the dog chase the cat?", "Does the cat chase the dog?") == "direction"


def test_currency_signs_before_or_after_the_amount_match_their_names():
    stored = profile("Is €40 too much for a haircut?")
    assert same_question(profile("Is 40 € too much for a haircut?"), stored) == ""
    assert same_question(profile("Is 40 euros too much for a haircut?"), stored) == ""
    assert same_question(profile("Is ₹500 a good tip?"), profile("Is 500 rupees a good tip?")) == ""


def test_another_currency_or_amount_never_hits():
    assert refused("Is A$100 enough for a week?", "Is $100 enough for a week?") == "content"
    assert refused("Is ₹500 a good tip?", "Is ¥500 a good tip?") == "content"
    assert refused("Is €40 too much for a haircut?", "Is €45 too much for a haircut?") == "numbers"


def test_arithmetic_signs_match_their_words():
    assert same_question(profile("What is 7 + 5?"), profile("What is seven plus five?")) == ""
    assert same_question(profile("What is 6 × 7?"), profile("What is 6 times 7?")) == ""
    assert same_question(profile("sqrt(81) = ?"), profile("What is the square root of 81?")) == ""


def test_another_operation_never_hits():
    assert refused("What is 7 + 5?", "What is 7 × 5?") != ""
    assert refused("What is 6 times 7?", "What is 6 minus 7?") != ""
    assert refused("sqrt(81) = ?", "sqrt(64) = ?") == "numbers"


def test_metric_units_match_in_every_spelling():
    assert (
        same_question(
            profile("How many mg in a gram?"), profile("How many milligrams are in a gram?")
        )
        == ""
    )
    assert (
        same_question(
            profile("Is 5 km/h a walking pace?"),
            profile("Is 5 kilometers per hour a walking pace?"),
        )
        == ""
    )
    assert (
        same_question(profile("Is 2l of water enough?"), profile("Is 2 litres of water enough?"))
        == ""
    )


def test_another_unit_never_hits():
    assert refused("How many ml in a cup?", "How many cl in a cup?") == "content"
    assert refused("Is 5 km/h a walking pace?", "Is 5 mph a walking pace?") in (
        "content",
        "alternative",
    )
    assert refused("Is 2l of water enough?", "Is 2kg of water enough?") in (
        "content",
        "alternative",
    )


def test_a_conversion_or_count_asked_back_to_front_matches():
    assert (
        same_question(
            profile("1 inch is how many cm?"), profile("How many centimetres are in an inch?")
        )
        == ""
    )
    assert (
        same_question(
            profile("Calorie count of an apple?"), profile("How many calories are in an apple?")
        )
        == ""
    )


def test_a_reshaped_conversion_or_count_of_something_else_never_hits():
    assert refused("1 inch is how many cm?", "1 inch is how many mm?") in ("content", "alternative")
    assert refused("Calorie count of an apple?", "How many calories are in a pear?") == "content"


def test_the_language_for_a_phrase_is_a_translation():
    assert (
        same_question(
            profile("What's the Italian for goodbye?"), profile("How do I say goodbye in Italian?")
        )
        == ""
    )
    assert (
        same_question(profile("What is 'dog' in German?"), profile("How do you say dog in German?"))
        == ""
    )


def test_a_translation_into_another_language_or_of_another_word_never_hits():
    assert refused("What's the Italian for goodbye?", "How do I say goodbye in Spanish?") in (
        "content",
        "alternative",
    )
    assert refused("What is 'dog' in German?", "How do you say cat in German?") != ""
    # "the X for" is a translation only when X is a language.
    assert "translate" not in profile("What's the syntax for a list comprehension?").content


def test_how_long_and_how_many_minutes_match():
    assert (
        same_question(
            profile("How long do I bake a potato?"), profile("How many minutes do I bake a potato?")
        )
        == ""
    )


def test_two_different_time_units_never_hit():
    assert refused(
        "How many minutes do I bake a potato?", "How many hours do I bake a potato?"
    ) in ("content", "alternative")


def test_making_something_faster_is_speeding_it_up():
    assert (
        same_question(
            profile("How can I make my phone faster?"), profile("How do I speed up my phone?")
        )
        == ""
    )
    assert (
        same_question(
            profile("What's the fastest way to learn typing?"), profile("How do I learn typing?")
        )
        == ""
    )


def test_making_something_slower_or_smaller_never_hits_faster():
    assert refused("How can I make my phone faster?", "How can I make my phone slower?") != ""
    assert refused("How can I make my photo bigger?", "How can I make my photo smaller?") != ""


def test_general_synonyms_of_question_verbs_match():
    assert (
        same_question(
            profile("How do I boost my battery life?"),
            profile("How can I improve my battery life?"),
        )
        == ""
    )
    assert same_question(profile("How do I split a PDF?"), profile("How do I divide a PDF?")) == ""


def test_a_verb_of_the_opposite_operation_never_hits():
    assert (
        refused("How do I improve my battery life?", "How do I reduce my battery life?")
        == "content"
    )
    assert refused("How do I split a PDF?", "How do I merge a PDF?") == "content"


def test_wordnet_synonyms_match():
    """Words sharing one of their common WordNet senses, or an everyday pair ("solicitor" /
    "lawyer")."""
    assert (
        same_question(
            profile("Why is the total on my invoice incorrect?"),
            profile("Why is the total on my invoice wrong?"),
        )
        == ""
    )
    assert same_question(profile("How do I quit smoking?"), profile("How do I stop smoking?")) == ""
    assert (
        same_question(
            profile("How much does a solicitor charge for a house sale?"),
            profile("How much does a lawyer charge for a house sale?"),
        )
        == ""
    )


def test_antonyms_and_neighbours_are_never_synonyms():
    """What word embeddings put close (Saturday / Sunday 0.81, enable / disable 0.72) WordNet
    keeps apart; minute and second share only a rare sense."""
    for stored, asked in [
        ("Is the library open on Sunday?", "Is the library open on Saturday?"),
        ("How do I enable cookies?", "How do I disable cookies?"),
        ("How long is a minute on Mars?", "How long is a second on Mars?"),
        ("Is the museum cheap?", "Is the museum expensive?"),
        ("How do I buy shares?", "How do I sell shares?"),
        ("How do I increase the font size?", "How do I decrease the font size?"),
        ("What is the cheapest flight to Rome?", "What is the most expensive flight to Rome?"),
    ]:
        assert refused(stored, asked) in ("content", "alternative"), asked


def test_greetings_sign_offs_and_openers_are_ignored():
    assert (
        same_question(
            profile("Morning all, how do I reset my password?"),
            profile("How do I reset my password?"),
        )
        == ""
    )
    assert (
        same_question(
            profile("how do I reset my password? cheers"), profile("How do I reset my password?")
        )
        == ""
    )
    assert (
        same_question(profile("quick one: where is the printer?"), profile("Where is the printer?"))
        == ""
    )
    assert (
        same_question(
            profile("Sorry if this is a silly question, but where is the printer?"),
            profile("Where is the printer?"),
        )
        == ""
    )


def test_a_greeting_word_asked_about_is_part_of_the_question():
    assert refused("What causes sickness?", "What causes morning sickness?") == "added"


def test_an_ordinal_in_digits_is_its_word_and_another_ordinal_never_hits():
    assert (
        same_question(
            profile("How do I add a 2nd monitor?"), profile("How do I add a second monitor?")
        )
        == ""
    )
    assert refused("How do I add a 2nd monitor?", "How do I add a third monitor?") == "content"


def test_arithmetic_in_number_words_matches_its_digits():
    assert same_question(profile("What is seven times nine?"), profile("What is 7 x 9?")) == ""
    assert refused("What is 7 x 9?", "What is seven times eight?") == "numbers"


def test_data_units_match_their_names_and_another_unit_never_hits():
    assert (
        same_question(
            profile("Is 5GB of storage enough?"), profile("Is 5 gigabytes of storage enough?")
        )
        == ""
    )
    assert refused("Is 5GB of storage enough?", "Is 5MB of storage enough?") in (
        "content",
        "alternative",
    )


def test_more_than_is_over_and_less_than_never_hits_it():
    assert (
        same_question(profile("Can I carry more than 7 kg?"), profile("Can I carry over 7 kg?"))
        == ""
    )
    assert refused("Can I carry more than 7 kg?", "Can I carry less than 7 kg?") == "particles"


def test_phrasal_verbs_match_their_one_word_forms():
    for stored, asked in [
        ("How do I back up my laptop?", "How do I backup my laptop?"),
        ("How do I rename a file in Linux?", "How do I change the name of a file in Linux?"),
        ("How do I return a parcel?", "How do I send back a parcel?"),
        ("Can I bring a dog?", "Am I allowed to bring a dog?"),
        ("Do I need a passport to fly to Ireland?", "Is a passport necessary to fly to Ireland?"),
    ]:
        assert same_question(profile(asked), profile(stored)) == "", asked


def test_a_verb_and_its_noun_or_participle_match():
    assert (
        same_question(
            profile("What is the deadline for filing a tax return?"),
            profile("What is the deadline to file a tax return?"),
        )
        == ""
    )
    assert (
        same_question(profile("Can I split the payment?"), profile("Can I split what I pay?")) == ""
    )


def test_a_word_with_a_suffix_is_not_another_word_that_begins_the_same():
    assert (
        refused("What is the population of the nation?", "What is the population of the nat?")
        == "content"
    )


def test_a_lost_password_is_reset_but_a_lost_passport_is_not():
    assert (
        same_question(
            profile("I lost my password, what now?"), profile("How do I reset my password?")
        )
        == ""
    )
    assert refused("How do I reset my passport?", "I lost my passport abroad") != ""
    assert (
        refused("What should I do if I lose my passport?", "I lost my wallet, what should I do?")
        == "content"
    )


def test_a_light_verb_on_one_side_is_free_and_what_it_governs_still_counts():
    assert (
        same_question(
            profile("How do I take a screenshot on Windows?"),
            profile("how to screenshot on windows"),
        )
        == ""
    )
    assert (
        same_question(
            profile("Do you offer discounts for students?"), profile("Is there a student discount?")
        )
        == ""
    )
    assert (
        refused("Do you offer discounts for students?", "Do you offer discounts for seniors?")
        == "content"
    )
    assert refused("How do I take ibuprofen?", "How do I take paracetamol?") == "content"


def test_chat_shorthand_is_spelled_out():
    assert (
        same_question(
            profile("yo how do i cancel my sub"), profile("How do I cancel my subscription?")
        )
        == ""
    )
    assert refused("How do I cancel my subscription?", "How do I cancel my appt?") == "content"


def test_a_conversion_or_count_need_not_say_convert():
    assert (
        same_question(profile("avocado calories?"), profile("How many calories are in an avocado?"))
        == ""
    )
    assert same_question(profile("5 km in miles"), profile("Convert 5 km to miles")) == ""
    assert refused("Convert 5 km to miles", "5 miles in km") != ""


def test_supposed_to_and_claim_back_are_phrasing():
    assert (
        same_question(
            profile("where am I supposed to park at the office"),
            profile("Where do I park at the office?"),
        )
        == ""
    )
    assert (
        same_question(
            profile("how do I claim back travel expenses"),
            profile("How do I get a refund for travel expenses?"),
        )
        == ""
    )
    assert (
        refused("Where do I park at the office?", "where am I supposed to park at the station")
        == "content"
    )


def test_a_wordnet_synonym_gets_no_margin_below_the_threshold():
    """Only a spelling (acronym, abbreviation, compound) the embedding cannot read may match below
    the threshold; a synonym it can read is bounded by the threshold, as an operator set it."""
    asked, stored = profile("Why is the total wrong?"), profile("Why is the total incorrect?")
    threshold = settings.CACHE_SEMANTIC_THRESHOLD
    assert match(asked, stored, threshold - 0.1, threshold) == "similarity"
    assert match(asked, stored, threshold, threshold) == ""


def test_a_phrasal_verb_matches_its_one_word_synonym():
    assert (
        same_question(profile("how do I call off my order"), profile("How do I cancel my order?"))
        == ""
    )
    assert (
        same_question(profile("Can I put off the meeting?"), profile("Can I postpone the meeting?"))
        == ""
    )


def test_a_phrasal_verb_is_not_its_bare_verb_or_its_opposite():
    assert (
        refused(
            "What is the check-in time at the hotel?", "What is the check-out time at the hotel?"
        )
        != ""
    )
    assert refused("How do I turn up the volume?", "How do I turn down the volume?") != ""
    assert refused("Should I round up the total?", "Should I round down the total?") != ""
    assert refused("How do I give up smoking?", "How do I give smoking?") != ""


def test_a_move_whose_source_and_target_change_places_never_hits_whatever_words_mark_them():
    assert (
        refused(
            "How do I move files from my laptop to my phone?", "move files from phone onto laptop"
        )
        == "direction"
    )
    assert (
        refused(
            "Copy photos from the camera into Dropbox", "copy photos to the camera from Dropbox"
        )
        == "direction"
    )
    assert (
        refused(
            "How do I shift funds from PayPal towards my bank?",
            "shift funds from my bank to PayPal",
        )
        == "direction"
    )


def test_a_move_said_with_other_direction_words_still_matches():
    assert (
        same_question(
            profile("How do I move files from my laptop to my phone?"),
            profile("how do i move files from my laptop onto my phone"),
        )
        == ""
    )
    assert (
        same_question(
            profile("Copy photos from the camera into Dropbox"),
            profile("copy photos from the camera to Dropbox"),
        )
        == ""
    )


def test_a_comparison_with_its_two_sides_exchanged_never_hits():
    assert (
        refused(
            "How many years older than Rome is Athens?", "How many years older than Athens is Rome?"
        )
        == "direction"
    )
    assert (
        refused("Is Mount Everest taller than K2?", "Is K2 taller than Mount Everest?")
        == "direction"
    )
    assert (
        refused(
            "How far is Tokyo ahead of Los Angeles in time?",
            "how far ahead of tokyo is los angeles in time",
        )
        == "direction"
    )
    assert refused("Does Easter come after Lent?", "Does Lent come after Easter?") == "direction"


def test_a_comparison_asked_in_another_order_with_the_same_sides_matches():
    assert (
        same_question(
            profile("How many hours ahead of Berlin is Tokyo?"),
            profile("how many hours is Tokyo ahead of Berlin"),
        )
        == ""
    )
    assert (
        same_question(
            profile("Is Mount Everest taller than K2?"), profile("is mount everest taller than k2")
        )
        == ""
    )


def test_one_of_a_thing_is_not_all_or_each_of_them():
    assert (
        refused("How do I archive one chat in WhatsApp?", "how do i archive all chats in whatsapp")
        == "quantity"
    )
    assert (
        refused("Delete a single photo from iCloud", "delete every photo from iCloud") == "quantity"
    )
    assert refused("Can I cancel one item of my order?", "can i cancel both items of my order") == (
        "quantity"
    )
    assert refused("Mute one contact on Signal", "mute contacts on Signal") == "quantity"
    assert refused("Remove all duplicates from a list", "remove some duplicates from a list") == (
        "quantity"
    )


def test_the_same_quantity_in_other_words_matches():
    assert (
        same_question(
            profile("How do I delete all emails in Outlook?"),
            profile("how do i delete every email in outlook"),
        )
        == ""
    )
    assert (
        same_question(
            profile("Which one is faster, Go or Rust?"), profile("Which is faster, Go or Rust?")
        )
        == ""
    )


def same(stored: str, asked: str) -> bool:
    """Do the two questions ask the same things, whatever their similarity?"""
    return same_question(profile(asked), profile(stored)) == ""


def test_casual_spellings_of_the_same_question_match():
    stored = "How do I change my password?"
    for asked in (
        "hey can u tell me how i change my password pls",
        "how do i change my password?? thx",
        "quick q: how do i change my password",
        "how 2 change my password lol",
        "how do i change ur password",  # "ur" is "your", a word the check never compares
    ):
        assert same(stored, asked), asked
    assert same("What are your opening hours?", "hey what r ur opening hours")
    assert same("Do you ship internationally?", "do u guys ship internationally")
    assert same("Where can I find my invoices?", "where r my invoices")
    assert same("Why doesn't my printer work?", "why doesnt my printer work")
    assert same("I'm locked out of my account, what do I do?", "im locked out of my account")


def test_casual_spelling_never_hides_what_is_asked():
    assert refused("How do I change my password?", "hey can u tell me how to change my username")
    assert refused("How do I turn on two-factor authentication?", "how 2 turn off 2fa pls")
    assert refused("Why does my printer work?", "why doesnt my printer work") == "negation"
    assert refused("Can I pay with PayPal?", "do u take bitcoin") == "content"
    assert refused("How do I stop my dog barking?", "my dog wont stop barking") != ""


def test_question_forms_of_the_same_question_match():
    for asked in ("docker?", "tell me about docker", "explain docker", "what's docker"):
        assert hits("What is Docker?", asked) == "", asked
    assert same("What is the difference between TCP and UDP?", "tcp vs udp?")
    assert same("How much does the pro plan cost?", "how much is the pro plan")
    assert refused("How much does the pro plan cost?", "how much is the basic plan") == "content"


def test_a_typo_of_a_word_matches_the_word():
    assert hits("How do I install Python on Windows?", "how do i instal pyhton on windows") == ""
    assert same("How do I receive payments?", "how do i recieve payments")
    assert same("Can I book accommodation near the venue?", "can i book acomodation near the venue")
    # A long name no dictionary knows, one edit away.
    assert same("How do I learn JavaScript?", "how do i learn javscript")


def test_a_typo_matches_below_the_threshold_like_an_abbreviation():
    asked, stored = profile("how do i reset my pasword"), profile("How do I reset my password?")
    threshold = settings.CACHE_SEMANTIC_THRESHOLD
    assert match(asked, stored, threshold - 0.1, threshold) == ""
    assert match(asked, stored, threshold - 0.4, threshold) == "similarity"


def test_known_words_and_names_a_letter_apart_are_never_typos():
    # Both are words (or both unknown names): a letter apart is another thing.
    assert refused("What is the capital of Austria?", "whats the capital of australia") in (
        "content",
        "alternative",
    )
    assert refused("How do I install MySQL?", "how do i install mssql") == "content"
    # (Not bake / make: to make bread is to bake it, an everyday synonym since.)
    assert refused("How do I bake bread?", "how do i fake bread") != ""
    # Short words are not corrected: "cat" is not a typo of "car".
    assert refused("How do I wash my car?", "how do i wash my cst") != ""
    # Two edits only from eight letters on.
    assert refused("How do I install Python?", "how do i install pyhtno") != ""


def test_how_often_said_three_ways_matches_and_another_period_never_hits():
    assert same("Is it healthy to run every day?", "is it healthy to run daily")
    assert same("How much water should I drink a day?", "how much water should i drink per day")
    assert same("Is losing 2 kg a week healthy?", "is it healthy to lose 2 kilograms per week")
    assert refused("How much water should I drink a day?", "how much water should i drink a week")
    assert refused("Is it healthy to run every day?", "is it healthy to run weekly") != ""
    # "a day trip" is a kind of trip, not a frequency.
    assert same(
        "Do I need a passport for a day trip to France?",
        "do i need a passport for a daytrip to france",
    )


def test_translations_asked_in_other_shapes_match():
    assert same("What does 'gracias' mean in English?", "translate gracias to english")
    assert same("What's the French word for 'cheese'?", "cheese in french?")
    assert same("What is 'dog' in Swedish?", "swedish word for dog")
    assert same(
        "Translate 'I am allergic to peanuts' into Spanish.",
        "how do you say i'm allergic to peanuts in spanish",
    )
    assert refused("What's the French word for 'cheese'?", "cheese in german?") != ""
    assert refused("What does 'gracias' mean in English?", "translate gracias to french") != ""


def test_adverbs_and_forms_hidden_by_a_synonym_group_match():
    assert same("Is it safe for dogs to eat grapes?", "can dogs safely eat grapes")
    assert same(
        "How do I delete my Instagram account?", "steps for deletion of my instagram account"
    )
    assert refused("Can I arrive early?", "can i arrive by ear") != ""


def test_ordinals_above_ten_in_words_are_their_numbers():
    assert same("Who was the 16th president?", "who was the sixteenth president")
    assert refused("Who was the 16th president?", "who was the seventeenth president") == "numbers"


def test_a_second_look_pairs_rarer_senses_only_for_very_close_questions():
    from llm.cache.lexical.verdict import LOOSE_SIMILARITY

    stored = profile("How do I remove a red wine stain from a carpet?")
    asked = profile("how do i remove a red wine mark from a carpet")
    threshold = settings.CACHE_SEMANTIC_THRESHOLD
    assert match(asked, stored, LOOSE_SIMILARITY, threshold) == ""
    assert match(asked, stored, LOOSE_SIMILARITY - 0.01, threshold) == "content"
    # Words that share a parent but no sense never pair, however close the questions.
    assert refused("Is the office open on Monday?", "is the office open on tuesday") in (
        "content",
        "alternative",
    )
    assert refused("How do I enable dark mode?", "how do i disable dark mode") == "content"
    assert refused("How do I import contacts?", "how do i export contacts") == "content"


def test_telegraphic_questions_match_their_full_form():
    assert same("How do I make pancakes?", "pancake recipe")
    assert same("How do I make pancakes?", "recipe for pancakes pls")
    assert same("How many calories in a banana?", "calories in a banana")
    assert same("How can I sleep better?", "tips for better sleep")
    assert same("What's the best way to learn to code?", "best way to learn coding?")
    assert same("How long does it take to walk 3 km?", "how long to walk three kilometres")
    assert refused("How do I make pancakes?", "waffle recipe") == "content"
    assert refused("How many calories in a banana?", "calories in an apple") == "content"


def test_a_typo_of_an_inflected_word_matches_the_word():
    stored = "what is the recommended dose of paracetamol for adults"
    assert hits(stored, "what is the recomended dose of paracetamol for adults") == ""
    assert same(
        "whats the difference between affect and effect",
        "whats the diffrence between affect and effect",
    )
    # Another word with the same ending is no typo of it.
    assert refused(
        "what is the recommended dose for adults", "what is the reported dose for adults"
    )


def test_a_temperature_without_its_degree_sign_matches():
    assert hits("how long to bake chicken at 200°C", "how long to bake chicken at 200 c") == ""
    assert same("set the oven to 350°F", "set the oven to 350f")
    assert refused("how long to bake chicken at 200°C", "how long to bake chicken at 200°F")
    assert refused("how long to bake chicken at 200°C", "how long to bake chicken at 180 c")
    # "c" after a number is not always Celsius: a count of C programs stays a count.
    assert "celsius" not in profile("write 3 c programs").content


def test_a_temperature_ending_the_question_is_one_with_or_without_its_question_mark():
    """docs/caching.md: a temperature typed without its degree sign is one "ending the
    question" — a question mark after it changes nothing."""
    for asked in ("how long to roast potatoes 200c?", "how long to roast potatoes 200 c ?!"):
        assert "celsius" in profile(asked).content, asked
        assert same("how long to roast potatoes 200°C", asked)
    assert same("is it safe to cook chicken 165f?", "is it safe to cook chicken 165 f")
    assert same("what is body temperature 37.5c?", "what is body temperature 37.5°C")


def test_a_code_whose_last_digit_is_followed_by_c_or_f_is_no_temperature():
    """Only a number standing alone is a temperature: a product code or a reference that
    ends in a digit and "c"/"f" is one word, whether or not a question mark follows it."""
    for code in ("4b87ca4f", "a7c", "x350f"):
        for asked in (f"How do I enable dark mode in app {code}?", f"how do I reset app {code}"):
            content = profile(asked).content
            assert code in content and not {"celsius", "fahrenheit"} & set(content), asked
    assert same(
        "How do I enable dark mode in app 4b87ca4f?", "how can I turn on dark mode in app 4b87ca4f"
    )
    # A number standing alone before "c" is one, code or not: the same on both sides.
    assert same(
        "How do I enable dark mode in app 1177038c?", "how can I turn on dark mode in app 1177038c"
    )


def test_feet_and_inches_in_prime_notation_match():
    assert same("what is 5 ft 10 in in cm", "what is 5'10\" in centimeters")
    assert hits("how tall is 5 ft 10 inches in cm", "how tall is 5'10\" in cm") == ""
    assert refused("what is 5 ft 10 in in cm", "5'11\" in centimeters")


def test_a_number_word_in_a_conversion_matches_its_digits():
    assert hits("how many ml is 3 cups", "how many ml is three cups") == ""
    assert refused("how many ml is 3 cups", "how many ml is four cups")


def test_a_state_code_ending_a_question_is_the_state():
    stored = "how to get a drivers license in california"
    assert hits(stored, "how to get a drivers license in ca") == ""
    assert hits("best things to do in new york city", "best things to do in nyc") == ""
    assert refused(
        "how to get a drivers license in california", "how to get a drivers license in tx"
    )
    # Only ending the question: "a ca certificate" is a certificate authority's.
    assert "california" not in profile("how do i create a ca certificate in linux").content


def test_list_or_name_the_things_asks_what_they_are():
    assert (
        hits("what are the planets in order from the sun", "list the planets in order from the sun")
        == ""
    )
    assert (
        hits("what are the bones in the human arm called", "name the bones in the human arm") == ""
    )
    assert refused("list the planets in order from the sun", "list the moons in order from the sun")


def test_a_count_asked_back_to_front_matches():
    assert hits("how many calories are in a banana", "a banana has how many calories") == ""
    assert refused("how many calories are in a banana", "an apple has how many calories")


def test_everyday_abbreviations_match():
    assert (
        hits("how much vitamin d should i take a day", "how much vit d should i take a day") == ""
    )
    assert same(
        "what is a good grade point average for medical school", "what is a good gpa for med school"
    )


def test_a_topic_followed_by_tips_asks_how_to_do_it():
    assert hits("Please give me some tips for a job interview.", "job interview tips pls??") == ""
    assert refused("tips for a job interview", "job application tips")


def test_a_question_about_another_persons_action_is_refused():
    # Who does what the opening auxiliary asks about: the speaker, or someone else.
    assert (
        refused("can i claim my parents as dependents", "can my parents claim me as dependents")
        == "subject"
    )
    assert refused("should i tip my hairdresser", "should my hairdresser tip me") == "subject"
    # "you" and "one" are anyone; "do" as the verb ("how to do my taxes") opens nothing.
    assert refused("how do i renew my passport", "how do you renew a passport") == ""
    assert refused("how to do my taxes", "how do i do my taxes") == ""
    assert hits("How can I renew my passport?", "how do i renew my passport") == ""


def test_the_agent_and_the_one_acted_on_are_two_people():
    assert (
        refused("how much notice must an employer give", "how much notice must an employee give")
        == "content"
    )
    assert refused("what does a trainer do", "what does a trainee do") == "content"
    # Other forms of one word still pair.
    assert refused("who discovered penicillin", "who was the discoverer of penicillin") == ""


def test_the_city_of_a_place_is_narrower_than_the_place():
    assert refused("what is the area of york", "what is the area of the county of york") == "added"
    assert refused("how big is paris", "how big is greater paris") == "added"
    # Elsewhere a place noun only frames the question.
    assert refused("what is the capital of france", "which city is the capital of france") == ""
    assert (
        refused(
            "what is the population of the city of leeds",
            "how many people live in the city of leeds",
        )
        == ""
    )


def test_a_verb_never_pairs_with_a_manner_of_doing_it():
    # WordNet files "simmer" and "whisper" directly under "boil" and "speak": other actions.
    assert not synonymous("whisper", "speak")
    assert not related_in_any_sense("scribble", "write")
    assert refused("how do i boil a soup", "how do i simmer a soup") == "content"
    # Shared senses still pair.
    assert refused("how do i stop smoking", "how do i quit smoking") == ""


def test_a_noun_never_pairs_with_a_kind_of_it():
    # WordNet files "oak" directly under "tree", "freezer" under "refrigerator", "rugby" under
    # "football": a question about one wants another answer, however close the embedding.
    for general, kind in [("tree", "oak"), ("fridge", "freezer"), ("football", "rugby")]:
        assert not synonymous(general, kind)
        assert not related_in_any_sense(general, kind)
    assert refused("how tall does a tree grow", "how tall does an oak grow") == "content"
    assert (
        refused(
            "is it safe to store bread in the fridge", "is it safe to store bread in the freezer"
        )
        == "content"
    )
    assert refused("how long is a football match", "how long is a rugby match") == "content"
    # An everyday pair the table no longer bridges is listed by hand (llm/cache/everyday.py).
    assert (
        refused("who is the best lawyer for a will", "who is the best solicitor for a will") == ""
    )
    assert refused("how do i fix a dripping faucet", "how do i fix a dripping tap") == ""


def test_two_kinds_of_one_thing_never_pair_even_in_the_second_look():
    # "union" and "league" (of rugby) are two kinds of association, sharing a parent only.
    assert not related_in_any_sense("union", "league")
    assert refused("how long is a rugby union match", "how long is a rugby league match") == (
        "content"
    )


def test_swapped_nouns_in_other_forms_are_a_direction():
    # "cups in a litre" and "litres in a cup": the same two nouns, exchanged and inflected.
    assert refused("how many cups are in a litre", "how many litres are in a cup") == "direction"
    assert refused("how many pounds do i get for 1 dollar", "how many dollars do i get for 1 pound")


def test_an_acronym_with_an_s_is_not_the_plural_or_typo_of_the_shorter_one():
    # SMTPS and SMTP use different ports; "https" is not "http" + a plural or a typed letter.
    assert refused("what port does smtp use", "what port does smtps use") == "content"
    assert refused("is sftp secure", "is sftps secure") == "content"
    # A real unknown plural still loses its s.
    assert refused("how do i merge two dicts in python", "how do i merge two dict in python") == ""


def test_the_kind_of_answer_a_question_word_asks_must_agree():
    assert refused("when was mozart born", "where was mozart born") == "question word"
    assert refused("who built the eiffel tower", "why was the eiffel tower built") == (
        "question word"
    )
    # "what" and "how" can ask any kind; a question word joining a clause asks nothing.
    assert refused("when does the pharmacy open", "what time does the pharmacy open") == ""
    assert profile("what does it mean when my cat purrs").asks == frozenset()
    # Two questions in one share the kind of answer one of them asks.
    assert (
        refused(
            "who invented the telephone and when", "when was the telephone invented and by whom"
        )
        == ""
    )


def test_how_asks_for_a_way_or_an_amount_which_why_and_when_do_not():
    assert refused("why do cats purr", "how do cats purr") == "question word"
    assert refused(
        "when do i need to renew my driving licence", "how do i renew my driving licence"
    ) == ("question word")
    assert (
        refused(
            "how many people died in the titanic sinking",
            "why did so many people die in the titanic sinking",
        )
        == "question word"
    )
    # A way asked with or without "how" is one question.
    assert refused("how do i reset my password", "what is the way to reset my password") == ""


def test_a_question_about_the_past_is_not_one_about_the_present_or_future():
    assert refused("who was the president of france", "who is the president of france") == "tense"
    assert refused("did the bill pass the senate", "will the bill pass the senate") == "tense"
    assert refused("has my parcel been delivered", "will my parcel be delivered") == "tense"
    assert refused("who coached the lakers", "who coaches the lakers") == "tense"
    assert refused("why was my card declined", "what happens if my card is declined") != ""
    # The same tense, said otherwise, is one question.
    assert refused("has my parcel been delivered", "was my parcel delivered") == ""
    assert refused("will it rain tomorrow", "is it going to rain tomorrow") == ""


def test_a_superlative_or_comparative_is_not_the_plain_adjective():
    assert refused("what is a cheap flight to paris", "what is the cheapest flight to paris") == (
        "degree"
    )
    # Two words for one degree are the words' business.
    assert refused("how can i fall asleep faster", "how can i fall asleep quicker") == ""


def test_all_of_a_plural_is_not_one_of_it():
    assert (
        refused(
            "what is a prime number between 10 and 20",
            "what are all the prime numbers between 10 and 20",
        )
        == "quantity"
    )
    assert refused("who was one of the founders of google", "who were the founders of google") != ""
    # "all my data" is my data.
    assert refused("how do i export my data", "how do i export all my data") == ""


def test_two_countries_a_letter_or_two_apart_are_two_places():
    assert refused("what is the capital of niger", "what is the capital of nigeria") == "content"
    assert refused("is austria in the eu", "is australia in the eu") != ""


def test_a_lead_in_that_says_nothing_is_dropped_one_that_narrows_stays():
    for lead_in in (
        "thanks in advance - ",
        "out of curiosity, ",
        "dear support team, ",
        "honestly i have no idea, ",
        "if it's not too much trouble, ",
        "i need to know asap: ",
        "omg ",
    ):
        assert (
            refused("what is the speed of light", f"{lead_in}what is the speed of light") == ""
        ), lead_in
    assert refused("how do i pay tax", "in the uk, how do i pay tax") != ""


def test_a_city_named_after_its_place_is_narrower_than_the_place():
    assert (
        refused("what is the population of new york", "what is the population of new york city")
        != ""
    )
    assert refused("what is the capital of peru", "what is the capital city of peru") == ""


def test_what_time_asks_when():
    assert refused("what time does the parade start", "where does the parade start") == (
        "question word"
    )
    assert refused("when does the pharmacy open", "what time does the pharmacy open") == ""


def test_whose_action_an_amount_asks_about_is_read_past_the_amount():
    assert (
        refused(
            "how much notice do i have to give my employer",
            "how much notice does my employer have to give me",
        )
        == "subject"
    )


def test_chat_numerals_for_to_and_for_are_words_where_a_word_follows():
    assert refused("how long should i cook rice", "how long 2 cook rice") == ""
    assert refused("what are some tips for saving money", "tips 4 saving money??") == ""
    # A number before a noun is still a number.
    assert refused("i need 3 tickets", "i need 2 tickets") == "numbers"
    assert refused("a table for 2 people", "a table for 4 people") == "numbers"


def test_hesitations_before_a_question_are_framing():
    assert (
        refused("how do i renew my library card", "um so like how do i renew my library card") == ""
    )
    assert refused("what is a haiku", "uhh what is a haiku") == ""
    # What follows is still compared.
    assert refused("um how do i renew my library card", "so how do i cancel my library card") != ""


def test_to_after_a_question_word_is_no_direction():
    # "git: how to undo a commit" names no target; "how to convert X to Y" still has one.
    assert refused("how do i undo a commit in git", "git: how to undo a commit") == ""
    assert refused("how to convert celsius to fahrenheit", "how to convert fahrenheit to celsius")


def test_finding_out_looking_up_or_discovering_a_thing_asks_where_to_see_it():
    assert refused("how do I find out my tax code", "how do I check my tax code") == ""
    assert refused("how can I look up my payslips", "how can I find my payslips") == ""
    assert refused("how do I discover my shoe size", "how do I find out my shoe size") == ""
    # What is looked up still has to agree, and checking in is no looking.
    assert refused("how do I find out my tax code", "how do I find out my tax refund") != ""
    assert refused("how do I check in for my ferry", "how do I check my ferry") != ""


def test_a_route_said_in_either_order_is_one_route():
    assert (
        refused("to Leeds from York, how long is the bus", "how long is the bus from York to Leeds")
        == ""
    )
    # Source and target exchanged are still the other way round, also where the phrases share
    # their first word.
    assert refused("how do I move from 2 GB to 8 GB", "how do I move from 8 GB to 2 GB")
    assert refused(
        "to Leeds from York, how long is the bus", "how long is the bus from Leeds to York"
    )


def test_a_relation_that_reads_the_same_both_ways_may_be_said_either_way():
    assert (
        refused("the distance between Mars and Venus", "the distance between Venus and Mars") == ""
    )
    assert refused("how far is Leeds from York", "how far is York from Leeds") == ""
    assert refused("should I say affect or effect", "should I say effect or affect") == ""
    # An ordering, a comparison or a move is not symmetric.
    assert refused("is a hare faster than a tortoise", "is a tortoise faster than a hare")
    assert refused("sort by name and date", "sort by date and name")
    assert refused("how far ahead of Leeds is York", "how far ahead of York is Leeds")


def test_everyday_phrasal_verbs_are_their_plain_verb():
    assert refused("how do I top up my phone credit", "how do I refill my phone credit") == ""
    assert (
        refused("could you help out with the washing up", "could you help with the washing up")
        == ""
    )


def test_two_members_of_one_closed_class_are_two_questions_however_reworded():
    assert (
        refused("best month to sail in croatia: june", "best month to sail in croatia: july")
        == "alternative"
    )
    assert refused("how much iron do women need", "what iron intake do men need") == "alternative"
    assert (
        refused(
            "what's the deepest lake in the north of scotland", "deepest lake in southern scotland"
        )
        == "alternative"
    )
    assert (
        refused("the coldest city in canada", "which is the hottest city in canada")
        == "alternative"
    )
    assert (
        refused(
            "how much is a gym membership per month", "what does a gym membership cost per year"
        )
        == "alternative"
    )
    assert refused("how far is a 10k in miles", "how far is a 10k in kilometres") != ""
    # The same member said two ways, or a member on one side only, is no alternative.
    assert same_question(profile("games for kids"), profile("games for children")) == ""
    assert refused("what is the largest lake in italy", "which is the biggest lake in italy") == ""
    assert (
        refused("when does spring start", "what date is the first day of spring") != "alternative"
    )
    # "good" and "bad" ask one thing: is this still good, has it gone bad.
    assert refused("is my milk still good", "has my milk gone bad") != "alternative"


def test_a_second_negation_is_another_question():
    """ "can't I buy without" is not "can I buy without": negations are counted, not noticed."""
    assert (
        refused(
            "Which medicines can I buy without a prescription?",
            "Which medicines can't I buy without a prescription?",
        )
        == "negation"
    )
    assert hits("Can I fly without a passport?", "can I fly if I don't have a passport") != (
        "negation"
    )


def test_the_auxiliary_after_a_question_words_noun_carries_the_tense():
    assert refused("What time did the match start?", "What time will the match start?") == "tense"
    assert (
        refused(
            "What were the side effects I had after the vaccine?",
            "What side effects will I have after the vaccine?",
        )
        == "tense"
    )
    assert hits("What time does the store open?", "what time does the shop open") == ""


def test_chat_numerals_after_more_words_that_take_them_are_words():
    assert refused("is it safe to swim after eating", "is it ok 2 swim after eating") == ""
    assert refused("what is a good gift for a new neighbour", "good gift 4 a new neighbour") == ""
    assert refused("is 30 celsius too hot for a dog", "is 30 celsius too hot 4 a dog") == ""
    # Before a stretch of time, a noun or after a word that counts, they are numbers.
    assert refused("is it ok to take 3 a day", "is it ok to take 2 a day") == "numbers"
    assert refused("is 1 a prime number", "is 2 a prime number") == "numbers"
    assert refused("when did world war 1 start", "when did world war 2 start") == "numbers"


def test_without_written_w_slash_o_is_without():
    assert refused("can i fly without a passport", "can i fly w/o a passport") == ""
    assert refused("can i fly with a passport", "can i fly w/o a passport") == "negation"


def test_a_longer_preamble_before_a_question_is_framing():
    stored = profile("How do I rename a folder?")
    for asked in (
        "Hi! Could you help me out? How do I rename a folder?",
        "Hey, one more thing - how do I rename a folder?",
        "Hello, I have a question if you don't mind. How do I rename a folder?",
        "I hope this isn't a silly question, but how do I rename a folder?",
        "I hope you can help me with this one: how do I rename a folder?",
    ):
        assert same_question(profile(asked), stored) == "", asked
    # A request for help with the thing itself is what is asked.
    assert same_question(profile("Could you help me rename a folder?"), stored) != "negation"


def test_decimal_and_binary_sizes_never_hit():
    assert refused("How many MB are in 3 GB?", "How many MiB are in 3 GiB?") == "alternative"
    assert (
        same_question(
            profile("How many megabytes are in 3 gigabytes?"), profile("How many MB in 3 GB?")
        )
        == ""
    )


def test_all_most_and_every_other_never_hit():
    assert refused(
        "Do all fish sleep with their eyes open?", "Do most fish sleep with their eyes open?"
    )
    assert refused(
        "How do I highlight every other line in Google Sheets?",
        "How do I highlight every line in Google Sheets?",
    )
    assert (
        refused(
            "How do I highlight every second line in Google Sheets?",
            "How do I highlight every other line in Google Sheets?",
        )
        == ""
    )


def test_the_average_never_answers_the_median():
    assert (
        refused(
            "How do I compute the median of a list in Python?",
            "How do I compute the average of a list in Python?",
        )
        == "alternative"
    )


def test_the_askers_own_thing_never_answers_someone_elses():
    assert (
        refused("What if my cat scratches a neighbour?", "What if a neighbour's cat scratches me?")
        == "owner"
    )
    assert refused("Can I deduct my own car?", "Can I deduct my colleague's car?") == "owner"
    for stored, asked in [
        ("How do I update my address?", "How do you update your address?"),
        ("How do I renew my passport for my son?", "How do I renew my son's passport?"),
        ("How do I get my deposit back?", "How does a tenant get their deposit back?"),
        ("How do I check my car's tyre pressure?", "How do I check my tyre pressure?"),
    ]:
        assert refused(stored, asked) != "owner", (stored, asked)


def test_a_negative_number_never_answers_its_positive():
    assert refused("What is the square of -3?", "What is the square of 3?") == "numbers"
    assert profile("What is minus 10 celsius in fahrenheit?").numbers == ("-10",)
    assert profile("Is it warm at negative 5 degrees?").numbers == ("-5",)
    for hyphenated in ("covid-19 symptoms", "a 2-3 day trip", "what is 10-4?", "£50 minus 20%"):
        assert all(not n.startswith("-") for n in profile(hyphenated).numbers), hyphenated


def test_all_or_most_never_answers_any():
    assert refused("Do all spiders spin webs?", "Do any spiders spin webs?") in (
        "quantity",
        "alternative",
    )
    assert refused("Do most lizards lay eggs?", "Do any lizards lay eggs?") in (
        "quantity",
        "alternative",
    )


def test_can_i_never_answers_should_i():
    assert (
        refused("Can I charge my phone overnight?", "Should I charge my phone overnight?")
        == "modality"
    )
    assert (
        refused("Where can I recycle old paint?", "Where should I take old paint to recycle it?")
        != "modality"
    )


def test_other_peoples_things_are_someone_elses():
    assert (
        refused(
            "Can I post photos of my own kids online?",
            "Can I post photos of other people's kids online?",
        )
        == "owner"
    )


def test_code_operators_are_not_each_other():
    assert refused("What does != do in Python?", "What does == do in Python?") != ""
    assert refused("Is == slow in PHP?", "Is === slow in PHP?") == "alternative"
    assert refused(
        "When do I use && in a shell script?", "When do I use || in a shell script?"
    ) == ("alternative")


def test_the_most_never_answers_the_fewest():
    assert (
        refused("Which city has the most bridges?", "Which city has the fewest bridges?")
        == "alternative"
    )
