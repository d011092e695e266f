"""What changes a cache key and what does not; the lexical check of semantic matches."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from llm.cache.keys import CacheRequest, Params, namespace_of, request_from
from llm.cache.lexical import verdict
from llm.cache.lexical.profile import profile
from llm.cache.lexical.rewrite import normalise
from llm.cache.lexical.verdict import ADDED_MARGIN, match, same_question

PARAMS = Params(temperatures=(0.0,), max_tokens=512, deployments=("simulated/simulated",))


def request(
    question: str = "How do I reset my password?",
    *,
    namespace: str = "org:1",
    alias: str = "default",
    params: Params = PARAMS,
    system: str = "You are Parley.",
    history: tuple[tuple[str, str], ...] = (),
) -> CacheRequest:
    return CacheRequest(
        namespace=namespace,
        organisation_id=1,
        alias=alias,
        params=params,
        system=system,
        history=history,
        question=question,
    )


@pytest.mark.parametrize(
    "variant",
    [
        "how do i reset my password",
        "HOW DO I RESET MY PASSWORD?",
        "  How   do I\treset my\npassword?  ",
        "How do I reset my password?!",
        "Ｈow do I reset my password?",  # full-width letter: NFKC
    ],
)
def test_the_key_ignores_case_whitespace_and_trailing_punctuation(variant):
    assert request(variant).key == request().key


@pytest.mark.parametrize(
    "changed",
    [
        {"question": "How do I reset my username?"},
        {"alias": "claude"},
        {"system": "You are a pirate."},
        {"history": (("user", "Hi"), ("assistant", "Hello!"))},
        {"params": Params(temperatures=(0.7,), max_tokens=512, deployments=PARAMS.deployments)},
        {"params": Params(temperatures=(0.0,), max_tokens=64, deployments=PARAMS.deployments)},
        {"params": Params(temperatures=(0.0,), max_tokens=512, deployments=("openai/gpt-4o",))},
    ],
    ids=["question", "alias", "system", "history", "temperature", "max_tokens", "deployment"],
)
def test_the_key_changes_with_anything_that_shapes_the_reply(changed):
    assert request(**changed).key != request().key


def test_the_history_counts_in_order_and_by_role():
    one = request(history=(("user", "A"), ("assistant", "B")))
    assert request(history=(("assistant", "B"), ("user", "A"))).key != one.key
    assert request(history=(("user", "A"), ("user", "B"))).key != one.key
    assert request(history=(("user", "a "), ("assistant", "b"))).key == one.key


def test_the_scope_is_the_key_without_the_question():
    assert request("What is a mutex?").scope == request().scope
    assert request(system="Other").scope != request().scope
    assert request(history=(("user", "Hi"), ("assistant", "Yo"))).scope != request().scope


def test_the_namespace_is_the_organisation_else_the_owner():
    assert namespace_of(organisation_id=7, owner_id=3) == "org:7"
    assert namespace_of(organisation_id=None, owner_id=3) == "user:3"
    # The namespace is not hashed into the key: it prefixes the storage key instead.
    assert request(namespace="org:2").key == request().key


def test_determinism_needs_every_deployment_at_temperature_zero():
    assert Params(temperatures=(0.0,), max_tokens=1, deployments=()).deterministic
    assert not Params(temperatures=(0.0, 0.2), max_tokens=1, deployments=()).deterministic
    assert not Params(temperatures=(), max_tokens=1, deployments=()).deterministic


def test_a_request_is_read_from_the_prompt_messages():
    messages = [
        SystemMessage(content="Be brief."),
        HumanMessage(content="Hi"),
        AIMessage(content="Hello"),
        HumanMessage(content="What is a mutex?"),
    ]
    built = request_from(
        messages, namespace="org:1", organisation_id=1, alias="default", params=PARAMS
    )
    assert built is not None
    assert built.system == "Be brief." and built.question == "What is a mutex?"
    assert built.history == (("user", "Hi"), ("assistant", "Hello"))
    assert not built.first_turn
    assert (
        request_from(messages[:3], namespace="org:1", organisation_id=1, alias="d", params=PARAMS)
        is None
    ), "a prompt that does not end with a question has nothing to look up"


def test_normalise_keeps_inner_punctuation():
    assert normalise("What does `x += 1` do?") == "what does `x += 1` do"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reset my password?", "how can I reset my password"),
        ("What is the largest ocean?", "Which ocean is the biggest?"),
        ("How do I delete a conversation?", "How can I remove a conversation?"),
        ("What's the difference between TCP and UDP?", "How does TCP differ from UDP?"),
        ("What is Docker?", "Can you explain what Docker is?"),
        ("How do I turn on two-factor authentication?", "How do I enable two-factor auth?"),
        # Word forms, synonyms, symbols and abbreviations (issue 18's misses).
        ("Summarize the French Revolution", "Give me a summary of the French Revolution"),
        ("What time zone is Chicago in?", "What timezone does Chicago use?"),
        ("What is 15% of 80?", "What is 15 percent of 80?"),
        ("What is the capital of Canada?", "Which city is Canada's capital?"),
        ("How do you say 'good night' in Spanish?", "Translate 'good night' to Spanish"),
        ("What are your opening hours?", "When are you open?"),
        ("How do I enable two-factor authentication?", "How do I turn on 2FA?"),
        ("How do I reset my password?", "I forgot my password, how do I reset it?"),
        ("How much is 10 USD in EUR?", "Convert 10 US dollars to euros"),
        ("How many centimetres in an inch?", "How many cm are in 1 inch?"),
    ],
)
def test_rewordings_ask_the_same_question(a, b):
    assert same_question(profile(a), profile(b)) == ""


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("What is the capital of France?", "What is the capital of Germany?", "alternative"),
        ("what is the capital of france", "what is the capital of spain", "alternative"),
        ("Convert 5 miles to km", "Convert 50 miles to km", "numbers"),
        ("Give me three tips", "Give me 3 tips", ""),
        ("Which EU countries use the euro?", "Which EU countries don't use the euro?", "negation"),
        ("How do I enable 2FA?", "How do I disable 2FA?", "content"),
        ("How do I round a number up?", "How do I round a number down?", "particles"),
        ("How do I convert PDF to Word?", "How do I convert Word to PDF?", "direction"),
        ("Is Rust faster than Go?", "Is Go faster than Rust?", "direction"),
        ("Does the dog chase the cat?", "Does the cat chase the dog?", "direction"),
        ("What does `x += 1` do?", "What does `x -= 1` do?", "quoted"),
        ("Convert 10 USD to EUR", "Convert 10 EUR to USD", "direction"),
        ("How much is 10 USD in EUR?", "How much is 10 EUR in USD?", "direction"),
        ("How many dollars is 100 euros?", "How many euros is 100 dollars?", "direction"),
        ("What is 15 percent of 80?", "What is 50 percent of 80?", "numbers"),
        ("When did World War I end?", "When did World War II end?", "numbers"),
        ("Which plans include SSO?", "Which plans don't include SSO?", "negation"),
        ("How do I turn on 2FA?", "How do I turn off 2FA?", "content"),
        ("Is coffee good for your health?", "Is coffee bad for your health?", "content"),
        ("How do I show hidden files?", "How do I hide hidden files?", "content"),
        ("How do I sort a list in Python?", "How do I sort a list of tuples in Python?", "added"),
    ],
)
def test_near_misses_are_told_apart(a, b, reason):
    assert same_question(profile(a), profile(b)) == reason


def test_an_added_word_is_never_a_match_by_default():
    stored, narrower = profile("How do I sort a list?"), profile("How do I sort a list of tuples?")
    assert verdict.ADDED_MAX_WORDS == 0
    assert match(narrower, stored, 0.99, 0.6) == "added"


def test_a_question_that_adds_a_word_needs_a_closer_embedding(monkeypatch):
    """Where allowed, one added content word is a match only well above the threshold; two
    never are."""
    monkeypatch.setattr(verdict, "ADDED_MAX_WORDS", 1)
    stored, narrower = profile("How do I sort a list?"), profile("How do I sort a list of tuples?")
    assert match(narrower, stored, 0.86, 0.6) == "added"
    assert match(narrower, stored, 0.60 + ADDED_MARGIN, 0.6) == ""
    two_more = profile("How do I sort a list of tuples by key?")
    assert match(two_more, stored, 0.99, 0.6) == "added"
    assert match(profile("How can I sort a list?"), stored, 0.59, 0.6) == "similarity"
