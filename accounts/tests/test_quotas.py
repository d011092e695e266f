"""Budgets: a reply's worst case is reserved before the provider call and settled after;
over-budget sends save nothing. (tests/integration/test_limits_quota.py races 50 of them
across two processes on PostgreSQL.)"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db.models import Case, F, Sum, When
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditLog, Budget, UsageCounter, UsageLedger, User
from accounts.quotas import (
    QuotaExceeded,
    TokenPrices,
    ledger_settle,
    period_reset,
    quota_reserve,
)
from accounts.services import membership_set
from accounts.tickets import ws_ticket_issue
from chat import services
from chat.models import Conversation, Message
from chat.replies import lifecycle, reaper
from chat.replies.accounting import quota_settle_message
from project.asgi import application

MAX = 100  # settings.LLM_MAX_TOKENS in these tests


@pytest.fixture(autouse=True)
def _small_max_tokens(settings):
    settings.LLM_MAX_TOKENS = MAX


def assert_counters_match_the_ledger(organisation) -> None:
    """The invariant: each counter is the sum of what its ledger rows charge."""
    charged = Case(
        When(state=UsageLedger.State.RESERVED, then=F("reserved_tokens")),
        default=F("used_tokens"),
    )
    ledger = UsageLedger.objects.filter(organisation=organisation)
    for counter in UsageCounter.objects.filter(organisation=organisation, period="day"):
        rows = ledger.filter(created_at__date=counter.start)
        if counter.user_id is not None:
            rows = rows.filter(user_id=counter.user_id)
        assert counter.tokens == (rows.aggregate(t=Sum(charged))["t"] or 0), counter


def send(user, text="hello", client_id="c", **kwargs):
    return services.message_send(
        author=user, conversation=None, text=text, client_id=client_id, **kwargs
    )


@pytest.mark.django_db
def test_a_send_reserves_its_worst_case_and_finishing_settles_real_usage(
    owner, organisation, no_dispatch
):
    reply = send(owner, organisation=organisation).reply
    entry = UsageLedger.objects.get(message=reply)
    assert entry.state == "reserved" and entry.reserved_tokens == entry.reserved_prompt_tokens + MAX
    assert entry.reserved_prompt_tokens > 0
    lifecycle.reply_start(message_id=reply.pk)
    lifecycle.reply_finish(
        message_id=reply.pk, content="Hi!", status="complete", prompt_tokens=12, completion_tokens=3
    )
    entry.refresh_from_db()
    assert (entry.state, entry.used_tokens) == ("settled", 15)
    user_day = UsageCounter.objects.get(organisation=organisation, user=owner, period="day")
    assert (user_day.tokens, user_day.requests) == (15, 1)
    assert_counters_match_the_ledger(organisation)


@pytest.mark.django_db
def test_an_unreported_prompt_count_settles_as_the_reserved_estimate(owner, no_dispatch):
    reply = send(owner).reply
    lifecycle.reply_start(message_id=reply.pk)
    lifecycle.reply_finish(
        message_id=reply.pk, content="x" * 40, status="complete", completion_tokens=10
    )
    entry = UsageLedger.objects.get(message=reply)
    assert entry.used_tokens == entry.reserved_prompt_tokens + 10


@pytest.mark.django_db
def test_a_send_over_the_users_daily_budget_is_refused_and_saves_nothing(
    owner, organisation, no_dispatch
):
    Budget.objects.create(organisation=organisation, user=owner, period="day", max_tokens=MAX)
    with pytest.raises(QuotaExceeded) as refused:
        send(owner, organisation=organisation)
    error = refused.value
    assert error.code == "quota_exceeded" and error.retryable is False
    tomorrow = (timezone.now() + timedelta(days=1)).astimezone(UTC).date()
    assert error.extra["resets_at"] == f"{tomorrow.isoformat()}T00:00:00+00:00"
    assert 0 < error.extra["retry_after"] <= 86400
    assert Conversation.objects.count() == 0 and Message.objects.count() == 0
    assert UsageLedger.objects.count() == 0
    assert not UsageCounter.objects.filter(tokens__gt=0).exists()


@pytest.mark.django_db
def test_the_organisations_monthly_budget_binds_all_its_members(
    owner, member, organisation, no_dispatch
):
    first = send(owner, organisation=organisation).reply
    worst = UsageLedger.objects.get(message=first).reserved_tokens
    # Room for half of another worst case: the next send by anyone in it is refused.
    Budget.objects.create(organisation=organisation, period="month", max_tokens=worst + worst // 2)
    with pytest.raises(QuotaExceeded, match="organisation's monthly"):
        send(member, organisation=organisation, client_id="m")
    # The owner's personal organisation is not bound by the team's budget.
    assert send(owner, client_id="p").created


@pytest.mark.django_db
def test_settling_gives_back_what_was_not_used(owner, organisation, no_dispatch):
    first = send(owner, organisation=organisation).reply
    worst = UsageLedger.objects.get(message=first).reserved_tokens
    # Room for two worst cases and the 10 tokens the first will really use.
    Budget.objects.create(
        organisation=organisation, user=owner, period="day", max_tokens=2 * worst + 10
    )
    send(owner, organisation=organisation, client_id="2")
    with pytest.raises(QuotaExceeded):
        send(owner, organisation=organisation, client_id="3")
    lifecycle.reply_start(message_id=first.pk)
    lifecycle.reply_finish(
        message_id=first.pk, content="ok", status="complete", prompt_tokens=5, completion_tokens=5
    )
    assert send(owner, organisation=organisation, client_id="3").created
    assert_counters_match_the_ledger(organisation)


@pytest.mark.django_db
def test_settling_locks_the_ledger_row_then_charges_all_four_counters_in_one_statement(
    owner, organisation, no_dispatch, django_assert_num_queries
):
    reply = send(owner, organisation=organisation).reply
    lifecycle.reply_start(message_id=reply.pk)
    Message.objects.filter(pk=reply.pk).update(
        status="complete", prompt_tokens=4, completion_tokens=6, content="Done."
    )
    reply.refresh_from_db()
    # (In the test's transaction: no BEGIN and COMMIT of its own to count.)
    with django_assert_num_queries(3) as captured:
        entry = quota_settle_message(message=reply)
    assert entry is not None and (entry.state, entry.used_tokens) == ("settled", 10)
    statements = [
        " ".join(q["sql"].replace('"', "").split()[:2]) for q in captured.captured_queries
    ]
    assert statements == [
        "SELECT accounts_usageledger.id,",  # the reservation, locked
        "UPDATE accounts_usageledger",  # settled
        "UPDATE accounts_usagecounter",  # its four counters locked and charged at once
    ], statements
    counters = UsageCounter.objects.filter(organisation=organisation)
    assert {(c.user_id, c.period): (c.tokens, c.requests) for c in counters} == {
        (owner.pk, "day"): (10, 1),
        (owner.pk, "month"): (10, 1),
        (None, "day"): (10, 1),
        (None, "month"): (10, 1),
    }
    assert_counters_match_the_ledger(organisation)


def _commit_waits_for_the_disk(settle) -> str:
    """`synchronous_commit` as the settlement's transaction has it when it charges the
    counters (its last statement, just before its commit)."""
    from django.db import connection

    seen: list[str] = []

    def watch(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith(f"UPDATE {UsageCounter._meta.db_table}"):
            # On a cursor of its own: the charge's rows are still to be read from this one.
            with context["connection"].connection.cursor() as cursor:
                seen.append(cursor.execute("SHOW synchronous_commit").fetchone()[0])
        return result

    with connection.execute_wrapper(watch):
        settle()
    assert len(seen) == 1
    return seen[0]


@pytest.mark.django_db(transaction=True)
def test_a_replys_settlement_commits_without_waiting_for_the_disk(owner, organisation, no_dispatch):
    """On PostgreSQL a reply's settlement does not wait for its commit's fsync (lost to a
    database crash, its row stays `reserved` with the reply final, and the reaper settles it
    again); a row without a reply (ledger_settle) waits, as every other commit does."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    reply = send(owner, organisation=organisation).reply
    lifecycle.reply_start(message_id=reply.pk)
    Message.objects.filter(pk=reply.pk).update(
        status="complete", prompt_tokens=4, completion_tokens=6, content="Done."
    )
    reply.refresh_from_db()
    assert _commit_waits_for_the_disk(lambda: quota_settle_message(message=reply)) == "off"
    assert UsageLedger.objects.get(message=reply).state == "settled"
    assert_counters_match_the_ledger(organisation)
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"  # for that transaction only

    entry = quota_reserve(user_id=owner.pk, organisation_id=organisation.pk, prompt_tokens=5)
    assert (
        _commit_waits_for_the_disk(lambda: ledger_settle(entry_id=entry.pk, used_tokens=3)) == "on"
    )


@pytest.mark.django_db
def test_settling_recreates_counters_that_went_missing_and_charges_them(
    owner, organisation, no_dispatch
):
    reply = send(owner, organisation=organisation).reply
    reserved = UsageLedger.objects.get(message=reply).reserved_tokens
    UsageCounter.objects.filter(organisation=organisation, user__isnull=True).delete()
    lifecycle.reply_start(message_id=reply.pk)
    lifecycle.reply_finish(
        message_id=reply.pk, content="Hi!", status="complete", prompt_tokens=2, completion_tokens=1
    )
    counters = {
        (c.user_id, c.period): (c.tokens, c.requests)
        for c in UsageCounter.objects.filter(organisation=organisation)
    }
    # The user's counters held the reservation; the organisation's, gone, start again from the
    # settlement's difference, as they did when settling locked and created them first.
    assert counters == {
        (owner.pk, "day"): (3, 1),
        (owner.pk, "month"): (3, 1),
        (None, "day"): (3 - reserved, 0),
        (None, "month"): (3 - reserved, 0),
    }


@pytest.mark.django_db
def test_cancelling_a_pending_reply_releases_its_reservation(owner, organisation, no_dispatch):
    reply = send(owner, organisation=organisation).reply
    lifecycle.reply_cancel(message=reply, by=owner)
    entry = UsageLedger.objects.get(message=reply)
    assert (entry.state, entry.used_tokens) == ("released", 0)
    counter = UsageCounter.objects.get(organisation=organisation, user__isnull=True, period="day")
    assert (counter.tokens, counter.requests) == (0, 0)


@pytest.mark.django_db
def test_the_reaper_releases_pending_replies_and_charges_dead_streams_their_worst_case(
    owner, organisation, no_dispatch
):
    pending = send(owner, organisation=organisation, client_id="p").reply
    streaming = send(owner, organisation=organisation, client_id="s").reply
    lifecycle.reply_start(message_id=streaming.pk)
    reaper.replies_reap(stale_after=timedelta(0), pending_after=timedelta(0))
    assert UsageLedger.objects.get(message=pending).state == "released"
    dead = UsageLedger.objects.get(message=streaming)
    assert dead.state == "settled" and dead.used_tokens == dead.reserved_tokens
    assert_counters_match_the_ledger(organisation)


@pytest.mark.django_db
def test_a_reply_settles_once(owner, no_dispatch):
    reply = send(owner).reply
    lifecycle.reply_start(message_id=reply.pk)
    reaper.replies_reap(stale_after=timedelta(0), pending_after=timedelta(0))
    # The generator comes back after the reaper: its finish is refused, the ledger unchanged.
    assert lifecycle.reply_finish(message_id=reply.pk, content="late", status="complete") is None
    entry = UsageLedger.objects.get(message=reply)
    assert entry.used_tokens == entry.reserved_tokens


@pytest.mark.django_db
def test_regenerate_and_edit_reserve_too(owner, organisation, no_dispatch):
    result = send(owner, organisation=organisation)
    lifecycle.reply_start(message_id=result.reply.pk)
    lifecycle.reply_finish(
        message_id=result.reply.pk,
        content="a",
        status="complete",
        prompt_tokens=1,
        completion_tokens=1,
    )
    Budget.objects.create(organisation=organisation, user=owner, period="day", max_tokens=10)
    with pytest.raises(QuotaExceeded):
        services.reply_regenerate(message=result.reply, by=owner)
    result.reply.refresh_from_db()
    assert not result.reply.superseded  # refused before anything changed
    with pytest.raises(QuotaExceeded):
        services.message_edit(message=result.user_message, author=owner, text="b", client_id="e")
    assert Message.objects.filter(superseded=True).count() == 0
    Budget.objects.filter(user=owner).update(max_tokens=10_000)
    Budget.objects.get(user=owner).save()  # as the admin saves it: the cached rules are dropped
    regenerated = services.reply_regenerate(message=result.reply, by=owner)
    assert UsageLedger.objects.get(message=regenerated.reply).state == "reserved"


@pytest.mark.django_db
def test_cost_budgets_reserve_at_the_configured_price_and_settle_reported_cost(
    owner, organisation, settings, no_dispatch
):
    settings.QUOTA_COST_PER_TOKEN = Decimal("0.001")
    reply = send(owner, organisation=organisation).reply
    entry = UsageLedger.objects.get(message=reply)
    assert entry.reserved_cost == Decimal(entry.reserved_tokens) * Decimal("0.001")
    lifecycle.reply_start(message_id=reply.pk)
    Message.objects.filter(pk=reply.pk).update(cost=Decimal("0.5"))
    lifecycle.reply_finish(
        message_id=reply.pk,
        content="x",
        status="complete",
        prompt_tokens=1,
        completion_tokens=1,
        cost=Decimal("0.5"),
    )
    entry.refresh_from_db()
    assert entry.cost == Decimal("0.5")
    Budget.objects.create(organisation=organisation, period="day", max_cost=Decimal("0.5"))
    with pytest.raises(QuotaExceeded):
        send(owner, organisation=organisation, client_id="2")


def test_periods_reset_at_utc_midnight_and_month_start():
    assert period_reset("day", date(2026, 12, 31)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_reset("month", date(2026, 12, 15)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_reset("month", date(2026, 2, 28)) == datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.django_db
def test_yesterdays_spend_does_not_count_against_today(owner, organisation):
    Budget.objects.create(organisation=organisation, user=owner, period="day", max_tokens=MAX + 50)
    yesterday = timezone.now() - timedelta(days=1)
    quota_reserve(
        user_id=owner.pk, organisation_id=organisation.pk, prompt_tokens=50, now=yesterday
    )
    quota_reserve(user_id=owner.pk, organisation_id=organisation.pk, prompt_tokens=50)
    with pytest.raises(QuotaExceeded):
        quota_reserve(user_id=owner.pk, organisation_id=organisation.pk, prompt_tokens=1)


@pytest.mark.django_db
def test_budgets_set_in_the_admin_apply_at_once_and_are_audited(
    client, owner, organisation, no_dispatch
):
    send(owner, organisation=organisation)  # caches the (empty) budget rules
    operator = User.objects.create_user(username="ops", password="x", is_staff=True)
    membership_set(organisation=organisation, user=operator, role="operator", by=owner)
    client.force_login(operator)
    response = client.post(
        reverse("admin:accounts_budget_add"),
        {"organisation": organisation.pk, "user": owner.pk, "period": "day", "max_tokens": 1},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    with pytest.raises(QuotaExceeded):
        send(owner, organisation=organisation, client_id="2")
    entry = AuditLog.objects.get(action="budget_changed")
    assert entry.actor == operator and entry.organisation == organisation
    assert entry.details["max_tokens"] == 1


@pytest.mark.django_db(transaction=True)
async def test_a_socket_send_over_budget_gets_quota_exceeded_with_resets_at(owner, organisation):
    await Budget.objects.acreate(organisation=organisation, period="day", max_tokens=1)
    ticket = await sync_to_async(ws_ticket_issue)(
        user=owner, organisation=organisation, api_key=None
    )
    ws = WebsocketCommunicator(
        application, f"/ws/chat/?ticket={ticket}", headers=[(b"host", b"127.0.0.1:8000")]
    )
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "send", "conversation": None, "text": "hi", "client_id": "q"})
    frame = await ws.receive_json_from()
    assert frame["type"] == "error" and frame["code"] == "quota_exceeded"
    assert frame["retryable"] is False and frame["resets_at"].endswith("T00:00:00+00:00")
    assert frame["retry_after"] >= 1
    assert await Message.objects.acount() == 0
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_streamed_reply_settles_its_reported_usage(owner, organisation):
    ticket = await sync_to_async(ws_ticket_issue)(
        user=owner, organisation=organisation, api_key=None
    )
    ws = WebsocketCommunicator(
        application, f"/ws/chat/?ticket={ticket}", headers=[(b"host", b"127.0.0.1:8000")]
    )
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "send", "conversation": None, "text": "hi", "client_id": "z"})
    while (frame := await ws.receive_json_from(timeout=10))["type"] != "done":
        pass
    entry = await UsageLedger.objects.aget(message_id=frame["message"])
    usage = frame["usage"]
    assert entry.state == "settled"
    assert (
        entry.used_tokens
        == (usage["prompt_tokens"] or entry.reserved_prompt_tokens) + (usage["completion_tokens"])
    )
    await sync_to_async(assert_counters_match_the_ledger)(organisation)
    await ws.disconnect()


@pytest.mark.django_db
def test_the_reaper_settles_a_final_reply_whose_settlement_was_lost(
    owner, organisation, no_dispatch, monkeypatch
):
    reply = send(owner, organisation=organisation).reply
    lifecycle.reply_start(message_id=reply.pk)
    with monkeypatch.context() as patched:
        patched.setattr(lifecycle, "quota_settle_message", lambda message: None)  # "a crash"
        lifecycle.reply_finish(
            message_id=reply.pk,
            content="ok",
            status="complete",
            prompt_tokens=4,
            completion_tokens=2,
        )
    assert UsageLedger.objects.get(message=reply).state == "reserved"
    reaper.replies_reap(stale_after=timedelta(hours=1), pending_after=timedelta(hours=1))
    entry = UsageLedger.objects.get(message=reply)
    assert (entry.state, entry.used_tokens) == ("settled", 6)
    assert_counters_match_the_ledger(organisation)


@pytest.fixture
def priced(settings):
    """The default model served by a deployment priced per million tokens ($0.001 a prompt
    token, $0.003 a completion token), with the flat QUOTA_COST_PER_TOKEN at its default 0."""
    from llm.models import Deployment, Provider

    settings.QUOTA_COST_PER_TOKEN = Decimal(0)
    provider = Provider.objects.create(name="priced", kind="simulated")
    return Deployment.objects.create(
        provider=provider,
        alias="simulated",  # the default alias in tests (LLM_DEFAULT_PROVIDER)
        model="sim",
        input_price=Decimal(1000),
        output_price=Decimal(3000),
    )


@pytest.mark.django_db
def test_a_reservation_holds_the_deployments_prices_when_no_flat_price_is_set(
    owner, organisation, priced, no_dispatch
):
    reply = send(owner, organisation=organisation).reply
    entry = UsageLedger.objects.get(message=reply)
    worst_cost = Decimal(entry.reserved_prompt_tokens) * Decimal("0.001") + MAX * Decimal("0.003")
    assert entry.reserved_cost == worst_cost > 0
    # Room for one and a half worst cases: the second send cannot fit and is refused.
    Budget.objects.create(organisation=organisation, period="day", max_cost=worst_cost * 3 / 2)
    with pytest.raises(QuotaExceeded):
        send(owner, organisation=organisation, client_id="2")
    # Released, the first reservation leaves room for the second again.
    lifecycle.reply_cancel(message=reply, by=owner)
    assert send(owner, organisation=organisation, client_id="2").created


@pytest.mark.django_db
def test_the_flat_price_still_bounds_a_reservation_when_it_is_higher(owner, organisation, settings):
    settings.QUOTA_COST_PER_TOKEN = Decimal("0.01")
    cheap = TokenPrices(input_per_million=Decimal(1), output_per_million=Decimal(1))
    entry = quota_reserve(
        user_id=owner.pk, organisation_id=organisation.pk, prompt_tokens=10, prices=cheap
    )
    assert entry.reserved_cost == Decimal(10 + MAX) * Decimal("0.01")


@pytest.mark.django_db
def test_the_price_ceiling_is_the_highest_the_alias_or_its_fallbacks_may_charge(owner):
    from llm.models import Deployment, FallbackChain, Provider
    from llm.pricing import price_ceiling

    provider = Provider.objects.create(name="p", kind="simulated")
    cheap = Deployment.objects.create(
        provider=provider, alias="chat", model="a", input_price=1, output_price=2
    )
    Deployment.objects.create(  # disabled now, but it may be enabled before the reply runs
        provider=provider, alias="chat", model="b", input_price=1, output_price=9, enabled=False
    )
    Deployment.objects.create(provider=provider, alias="backup", model="c", input_price=5)
    assert price_ceiling(alias="chat") == TokenPrices(Decimal(1), Decimal(9))
    FallbackChain.objects.create(alias="chat", fallbacks="backup")
    assert price_ceiling(alias="chat") == TokenPrices(Decimal(5), Decimal(9))
    cheap.output_price = Decimal(20)
    cheap.save()  # as the admin saves it: the cached ceilings are dropped
    assert price_ceiling(alias="chat") == TokenPrices(Decimal(5), Decimal(20))
    assert price_ceiling(alias="local") == TokenPrices()  # served by the settings: no prices


@pytest.mark.django_db
def test_a_dead_stream_keeps_its_reserved_cost_charged(owner, organisation, priced, no_dispatch):
    reply = send(owner, organisation=organisation).reply
    lifecycle.reply_start(message_id=reply.pk)
    reaper.replies_reap(stale_after=timedelta(0), pending_after=timedelta(0))
    entry = UsageLedger.objects.get(message=reply)
    assert entry.state == "settled" and entry.cost == entry.reserved_cost > 0
