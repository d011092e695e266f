"""Usage figures agree everywhere: the day counters, the per-day report and the ledger, also
after conversations are deleted through the REST API (their spend stays on the ledger)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import Period, UsageCounter, UsageLedger, User
from accounts.usage import usage_daily
from chat.models import Conversation, Message
from chat.tests.conftest import API
from chat.tests.test_api import wait_final


def _chat(api: Client, texts: list[str]) -> int:
    created = api.post(f"{API}/conversations", {"title": "t"}, content_type="application/json")
    conversation_id = created.json()["id"]
    for text in texts:
        sent = api.post(
            f"{API}/conversations/{conversation_id}/messages",
            {"text": text},
            content_type="application/json",
        )
        assert sent.status_code == 201
        assert wait_final(api, sent.json()["reply"])["status"] == "complete"
    return conversation_id


@pytest.mark.django_db(transaction=True)
def test_a_conversation_deleted_through_the_api_keeps_its_usage(
    api, client, owner, organisation, settings
):
    settings.QUOTA_COST_PER_TOKEN = Decimal("0.000002")  # the simulated model has no prices
    doomed = _chat(api, ["How far is the moon?", "And the sun?"])
    _chat(api, ["Tell me about otters, at some length please."])
    doomed_replies = list(
        Message.objects.filter(conversation_id=doomed, role="assistant").values_list(
            "pk", "model", "prompt_tokens", "completion_tokens"
        )
    )
    assert api.delete(f"{API}/conversations/{doomed}").status_code == 204
    assert not Conversation.objects.filter(pk=doomed).exists()

    # The deleted conversation's ledger rows are still there, unlinked, with what they were.
    entries = UsageLedger.objects.filter(organisation=organisation, user=owner)
    orphans = entries.filter(message__isnull=True)
    assert orphans.count() == len(doomed_replies) == 2
    assert {(e.model, e.prompt_tokens, e.completion_tokens) for e in orphans} == {
        (model, prompt, completion) for _pk, model, prompt, completion in doomed_replies
    }
    assert all(e.state == "settled" and e.outcome == "complete" for e in orphans)

    ledger = entries.aggregate(tokens=Sum("used_tokens"), cost=Sum("cost"))
    today = timezone.now().date()
    counter = UsageCounter.objects.get(
        organisation=organisation, user=owner, period=Period.DAY, start=today
    )
    [report] = [
        row.totals
        for row in usage_daily(organisation_ids=[organisation.pk])
        if row.day == today and row.user_id == owner.pk
    ]
    assert counter.tokens == report.tokens == ledger["tokens"] > 0
    assert counter.cost == report.cost == ledger["cost"] > 0
    assert counter.requests == report.replies == entries.count() == 3
    assert report.prompt_tokens + report.completion_tokens == ledger["tokens"]

    # The admin's report page says the same.
    client.force_login(User.objects.create_superuser(username="root", password="pw"))
    page = client.get(reverse("admin:chat_usagereport_changelist")).content.decode()
    assert f'<th id="usage-total-tokens">{counter.tokens}</th>' in page
    assert f'<th id="usage-total-cost">{counter.cost.quantize(Decimal("0.00000001"))}</th>' in page


@pytest.mark.django_db
def test_a_conversation_deleted_mid_reply_keeps_the_worst_case_charged(
    owner, organisation, no_dispatch
):
    """The provider may have billed a streaming reply in full: deleting its conversation
    charges the reserved worst case, and the ledger row says what it was."""
    from chat import services
    from chat.replies import lifecycle

    sent = services.message_send(
        author=owner, conversation=None, text="Hi", client_id="c", organisation=organisation
    )
    lifecycle.reply_start(message_id=sent.reply.pk)
    services.conversation_delete(conversation=sent.reply.conversation, by=owner)

    entry = UsageLedger.objects.get(organisation=organisation)
    assert entry.message_id is None and entry.state == "settled"
    assert (
        entry.used_tokens == entry.reserved_tokens == entry.prompt_tokens + entry.completion_tokens
    )
    assert (entry.outcome, entry.error_code, entry.model) == ("cancelled", "deleted", "simulated")
    today = timezone.now().date()
    counter = UsageCounter.objects.get(
        organisation=organisation, user=owner, period=Period.DAY, start=today
    )
    [report] = [r.totals for r in usage_daily(organisation_ids=[organisation.pk])]
    assert counter.tokens == report.tokens == entry.used_tokens
    assert counter.requests == report.replies == 1 and report.in_flight == 0
