"""A send into an existing conversation reserves its budget as quota_reserve does, on
PostgreSQL inside the send's one statement (accounts/quotas/statement.py statement_reservation,
chat/services/said.py): the same worst case charged to the same four counters, the same
refusals naming the same budget, nothing saved or charged by a refused send, counters made
for the first send of a day, and concurrent sends never past a budget. On SQLite the same
behaviour comes from the transaction (quota_reserve), so these tests run on both."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections

from accounts.models import Budget, UsageCounter, UsageLedger
from accounts.quotas import QuotaExceeded, cost_bound
from accounts.tests.test_quotas import assert_counters_match_the_ledger
from chat import selectors, services
from chat.errors import ChatError
from chat.models import Conversation, Message
from llm.options import GenerationOptions

pytestmark = pytest.mark.django_db(transaction=True)

MAX = 100  # settings.LLM_MAX_TOKENS in these tests


@pytest.fixture(autouse=True)
def _small_max_tokens(settings):
    settings.LLM_MAX_TOKENS = MAX


def _conversation(owner, organisation) -> Conversation:
    """A conversation with some history (a reply finished), as most sends find theirs."""
    first = services.message_send(
        author=owner,
        conversation=None,
        text="the first message, long enough to count",
        client_id="first",
        organisation=organisation,
    )
    Message.objects.filter(pk=first.reply.pk).update(status="complete", content="an answer " * 7)
    return first.reply.conversation


def _send(owner, conversation, client_id: str, text: str = "and another thing", **kwargs):
    return services.message_send(
        author=owner, conversation=conversation, text=text, client_id=client_id, **kwargs
    )


def _counters(organisation) -> dict[tuple[int | None, str], tuple[int, Decimal, int]]:
    return {
        (c.user_id, c.period): (c.tokens, c.cost, c.requests)
        for c in UsageCounter.objects.filter(organisation=organisation)
    }


def _everything(organisation) -> tuple[object, ...]:
    """What a refused send must leave as it found it."""
    return (
        Message.objects.count(),
        UsageLedger.objects.count(),
        _counters(organisation),
        list(Conversation.objects.values_list("updated_at", flat=True)),
    )


@pytest.fixture
def priced(settings):
    """The default model priced per million tokens, and a flat price per token as well."""
    from llm.models import Deployment, Provider

    settings.QUOTA_COST_PER_TOKEN = Decimal("0.0000015")
    provider = Provider.objects.create(name="priced", kind="simulated")
    return Deployment.objects.create(
        provider=provider,
        alias="simulated",  # the default alias in tests (LLM_DEFAULT_PROVIDER)
        model="sim",
        input_price=Decimal("1.25"),
        output_price=Decimal("3.333"),
    )


@pytest.mark.parametrize("max_tokens", [None, 7])
def test_a_send_into_a_conversation_reserves_what_quota_reserve_would(
    owner, organisation, no_dispatch, priced, max_tokens
):
    from llm.pricing import price_ceiling

    conversation = _conversation(owner, organisation)
    text = "what does it cost? " * 5
    prompt = selectors.prompt_tokens_estimate(conversation_id=conversation.pk, text=text)
    completion = MAX if max_tokens is None else max_tokens
    worst_cost = cost_bound(
        prompt_tokens=prompt, max_tokens=completion, prices=price_ceiling(alias="")
    ).quantize(Decimal("0.00000001"))
    before = _counters(organisation)

    sent = _send(owner, conversation, "b", text, options=GenerationOptions(max_tokens=max_tokens))

    entry = UsageLedger.objects.get(message_id=sent.reply.pk)
    assert (entry.state, entry.organisation_id, entry.user_id) == (
        "reserved",
        organisation.pk,
        owner.pk,
    )
    assert (entry.reserved_prompt_tokens, entry.reserved_tokens) == (prompt, prompt + completion)
    assert entry.reserved_cost == worst_cost > 0
    after = _counters(organisation)
    assert set(after) == {(owner.pk, "day"), (owner.pk, "month"), (None, "day"), (None, "month")}
    for scope, (tokens, cost, requests) in after.items():
        assert (tokens, cost, requests) == (
            before[scope][0] + prompt + completion,
            before[scope][1] + worst_cost,
            before[scope][2] + 1,
        )
    assert_counters_match_the_ledger(organisation)


def test_a_send_into_a_conversation_over_a_budget_is_refused_and_saves_and_charges_nothing(
    owner, organisation, no_dispatch
):
    conversation = _conversation(owner, organisation)
    spent = UsageCounter.objects.get(organisation=organisation, user=owner, period="day").tokens
    Budget.objects.create(
        organisation=organisation, user=owner, period="day", max_tokens=spent + MAX
    )
    found = _everything(organisation)

    with pytest.raises(QuotaExceeded, match="your daily budget") as refused:
        _send(owner, conversation, "b")

    assert refused.value.code == "quota_exceeded" and refused.value.extra["retry_after"] > 0
    assert _everything(organisation) == found
    assert no_dispatch == [conversation.messages.get(role="assistant").pk]


def test_the_refusal_names_the_budget_that_refused(owner, organisation, no_dispatch):
    conversation = _conversation(owner, organisation)
    spent = UsageCounter.objects.get(organisation=organisation, user=None, period="month").tokens
    Budget.objects.create(organisation=organisation, user=owner, period="day", max_tokens=10**9)
    Budget.objects.create(organisation=organisation, period="month", max_tokens=spent + MAX // 2)

    with pytest.raises(QuotaExceeded, match="your organisation's monthly budget") as refused:
        _send(owner, conversation, "b")

    assert refused.value.rule.period == "month" and refused.value.rule.user_id is None


def test_a_cost_budget_already_reached_refuses_even_a_send_that_costs_nothing(
    owner, organisation, no_dispatch
):
    conversation = _conversation(owner, organisation)  # nothing priced: its cost is 0
    Budget.objects.create(organisation=organisation, period="day", max_cost=Decimal(0))
    found = _everything(organisation)

    with pytest.raises(QuotaExceeded, match="organisation's daily budget"):
        _send(owner, conversation, "b")

    assert _everything(organisation) == found


def test_a_cost_budget_refuses_a_send_whose_worst_case_would_pass_it(
    owner, organisation, no_dispatch, priced
):
    conversation = _conversation(owner, organisation)
    worst = UsageLedger.objects.get().reserved_cost
    spent = UsageCounter.objects.get(organisation=organisation, user=None, period="day").cost
    Budget.objects.create(organisation=organisation, period="day", max_cost=spent + worst / 2)
    found = _everything(organisation)

    with pytest.raises(QuotaExceeded, match="organisation's daily budget"):
        _send(owner, conversation, "b")

    assert _everything(organisation) == found


def test_a_send_that_fits_a_budget_exactly_goes_ahead(owner, organisation, no_dispatch):
    conversation = _conversation(owner, organisation)
    text = "exactly"
    prompt = selectors.prompt_tokens_estimate(conversation_id=conversation.pk, text=text)
    spent = UsageCounter.objects.get(organisation=organisation, user=owner, period="day").tokens
    Budget.objects.create(
        organisation=organisation, user=owner, period="day", max_tokens=spent + prompt + MAX
    )

    assert _send(owner, conversation, "b", text).created
    with pytest.raises(QuotaExceeded):
        _send(owner, conversation, "c", text)


def test_the_first_send_of_a_day_into_a_conversation_makes_the_days_counters(
    owner, organisation, no_dispatch
):
    conversation = _conversation(owner, organisation)
    # Yesterday's counters: today has none yet (the month's are there).
    yesterday = UsageCounter.objects.filter(organisation=organisation, period="day")
    yesterday.update(start=yesterday.first().start - timedelta(days=1))
    UsageLedger.objects.update(created_at=UsageLedger.objects.first().created_at - timedelta(1))

    sent = _send(owner, conversation, "b")

    entry = UsageLedger.objects.get(message_id=sent.reply.pk)
    today = UsageCounter.objects.get(
        organisation=organisation, user=owner, period="day", start=entry.created_at.date()
    )
    assert (today.tokens, today.requests) == (entry.reserved_tokens, 1)
    assert_counters_match_the_ledger(organisation)


def test_a_send_into_a_conversation_deleted_meanwhile_charges_nothing(
    owner, organisation, no_dispatch
):
    conversation = _conversation(owner, organisation)
    Conversation.objects.filter(pk=conversation.pk).delete()
    counters = _counters(organisation)

    with pytest.raises(ChatError) as refused:
        _send(owner, conversation, "b")

    assert refused.value.code == "not_found"
    assert _counters(organisation) == counters
    assert not UsageLedger.objects.filter(message__isnull=False).exists()


def test_a_repeat_refused_by_the_budget_its_first_used_up_answers_with_the_first(
    owner, organisation, no_dispatch
):
    conversation = _conversation(owner, organisation)
    sent = _send(owner, conversation, "b")
    spent = UsageCounter.objects.get(organisation=organisation, user=owner, period="day").tokens
    Budget.objects.create(organisation=organisation, user=owner, period="day", max_tokens=spent)

    again = _send(owner, conversation, "b")

    assert not again.created and again.reply.pk == sent.reply.pk
    assert UsageLedger.objects.count() == 2


def test_concurrent_sends_into_conversations_never_pass_a_budget(owner, organisation, no_dispatch):
    """Eight sends at once, each into its own conversation, against an organisation's daily
    budget with room for three: exactly three get in, whatever the order (the counters' row
    locks queue them; each checks the total the one before it committed)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers at BEGIN; the row locks are PostgreSQL's")
    conversations = [
        services.message_send(
            author=owner,
            conversation=None,
            text="first",
            client_id=f"c-{n}",
            organisation=organisation,
        ).reply.conversation
        for n in range(8)
    ]
    text = "the same words"
    worst = max(
        selectors.prompt_tokens_estimate(conversation_id=c.pk, text=text) + MAX
        for c in conversations
    )
    spent = UsageCounter.objects.get(organisation=organisation, user=None, period="day").tokens
    Budget.objects.create(organisation=organisation, period="day", max_tokens=spent + 3 * worst)
    start = threading.Barrier(len(conversations))
    outcomes: list[str] = []

    def one(conversation: Conversation, n: int) -> None:
        try:
            start.wait()
            _send(owner, conversation, f"race-{n}", text)
            outcomes.append("sent")
        except QuotaExceeded:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one, args=(c, n)) for n, c in enumerate(conversations)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["refused"] * 5 + ["sent"] * 3
    day = UsageCounter.objects.get(organisation=organisation, user=None, period="day")
    assert day.tokens <= spent + 3 * worst
    assert_counters_match_the_ledger(organisation)
