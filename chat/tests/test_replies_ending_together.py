"""Replies that end together are ended together (chat/replies/ending.py): their final rows,
cancel flags and settlements in a few statements for all, each reply still ended and settled
once, with its own text, status and usage, and the budgets' counters the sum of the ledger."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext

from accounts.models import UsageCounter, UsageLedger
from chat import services
from chat.errors import ChatError
from chat.models import Message
from chat.replies import ending as ending_module
from chat.replies import lifecycle
from chat.replies.accounting import ledger_settle_stale
from chat.replies.ending import ReplyEnding, replies_finish, reply_end

pytestmark = pytest.mark.django_db(transaction=True)


def _claimed(users, count: int) -> list[Message]:
    """`count` replies claimed by their generator, their senders taking turns."""
    replies = []
    for n in range(count):
        sent = services.message_send(
            author=users[n % len(users)], conversation=None, text=f"Question {n}", client_id=f"q{n}"
        )
        claimed = lifecycle.reply_start(message_id=sent.reply.pk)
        assert claimed is not None
        replies.append(claimed)
    return replies


def _endings(replies: list[Message]) -> list[ReplyEnding]:
    """A different end for each reply: complete, cancelled, failed, incomplete, in turn."""
    kinds: list[dict[str, Any]] = [
        {"status": Message.Status.COMPLETE, "prompt_tokens": 12, "completion_tokens": 30},
        {"status": Message.Status.CANCELLED},  # no usage reported: its text estimated
        {
            "status": Message.Status.FAILED,
            "error": ChatError("internal", "Something went wrong."),
        },
        {"status": Message.Status.INCOMPLETE, "prompt_tokens": 7, "completion_tokens": 64},
    ]
    endings = []
    for n, reply in enumerate(replies):
        kind = kinds[n % len(kinds)]
        content = "" if kind["status"] == Message.Status.FAILED else f"Answer {n} " * (n + 1)
        endings.append(
            ReplyEnding(
                message_id=reply.pk,
                content=content,
                provider="simulated",
                model="sim-1",
                cost=Decimal("0.00001000") * (n + 1) if "prompt_tokens" in kind else None,
                routing={"alias": "default", "n": n},
                claimed=reply,
                **kind,
            )
        )
    return endings


def _counters_agree_with_the_ledger() -> None:
    """Every counter holds the sum of its ledger rows (reserved ones at their worst case)."""
    for counter in UsageCounter.objects.all():
        rows = UsageLedger.objects.filter(organisation_id=counter.organisation_id)
        if counter.user_id is not None:
            rows = rows.filter(user_id=counter.user_id)
        settled = rows.exclude(state=UsageLedger.State.RESERVED).aggregate(
            tokens=Sum("used_tokens"), cost=Sum("cost")
        )
        reserved = rows.filter(state=UsageLedger.State.RESERVED).aggregate(
            tokens=Sum("reserved_tokens"), cost=Sum("reserved_cost")
        )
        tokens = (settled["tokens"] or 0) + (reserved["tokens"] or 0)
        cost = (settled["cost"] or Decimal(0)) + (reserved["cost"] or Decimal(0))
        requests = rows.exclude(state=UsageLedger.State.RELEASED).count()
        assert (counter.tokens, counter.cost, counter.requests) == (tokens, cost, requests), counter


def test_replies_ending_together_each_end_with_their_own_text_status_and_usage(
    owner, member, no_dispatch
):
    replies = _claimed([owner, member], 8)
    endings = _endings(replies)

    with CaptureQueriesContext(connection) as queries:
        ended = replies_finish(endings=endings)

    assert [m.pk for m in ended if isinstance(m, Message)] == [r.pk for r in replies]
    rows = {m.pk: m for m in Message.objects.filter(pk__in=[r.pk for r in replies])}
    for given in endings:
        row = rows[given.message_id]
        assert (row.status, row.content, row.seq) == (
            given.status,
            given.content,
            len(given.content),
        )
        assert (row.prompt_tokens, row.completion_tokens, row.cost) == (
            given.prompt_tokens,
            given.completion_tokens,
            given.cost,
        )
        assert (row.provider, row.model, row.routing) == ("simulated", "sim-1", given.routing)
        assert row.finished_at is not None
        assert row.error_code == ("internal" if given.status == Message.Status.FAILED else "")
    ledger = {e.message_id: e for e in UsageLedger.objects.filter(message__in=replies)}
    for given in endings:
        entry = ledger[given.message_id]
        if given.prompt_tokens is not None:  # usage reported: charged as reported
            assert entry.state == UsageLedger.State.SETTLED
            assert (entry.prompt_tokens, entry.completion_tokens, entry.cost) == (
                given.prompt_tokens,
                given.completion_tokens,
                given.cost,
            )
        elif given.content:  # cancelled: what it streamed, estimated
            assert entry.state == UsageLedger.State.SETTLED and entry.completion_tokens > 0
        else:  # failed before any text: nothing used
            assert entry.state == UsageLedger.State.RELEASED
        assert entry.outcome == given.status and entry.provider == "simulated"
    _counters_agree_with_the_ledger()
    if connection.vendor == "postgresql":
        # The final rows; then, in one transaction, the ledger rows locked, written and the
        # counters charged: six statements for eight replies (alone, six each).
        assert len(queries) == 6, [q["sql"][:80] for q in queries.captured_queries]


def test_each_reply_ends_and_is_settled_once(owner, member, no_dispatch):
    replies = _claimed([owner, member], 6)
    replies_finish(endings=_endings(replies))
    counters = sorted(UsageCounter.objects.values_list("id", "tokens", "cost", "requests"))
    ledger = sorted(UsageLedger.objects.values_list("id", "state", "used_tokens", "settled_at"))

    again = replies_finish(endings=_endings(replies))

    assert again == [None] * 6  # not streaming any more: no second ending
    assert ledger_settle_stale() == 0
    assert sorted(UsageCounter.objects.values_list("id", "tokens", "cost", "requests")) == counters
    assert (
        sorted(UsageLedger.objects.values_list("id", "state", "used_tokens", "settled_at"))
        == ledger
    )


def test_a_reply_the_reaper_ended_first_is_left_as_the_reaper_left_it(owner, no_dispatch):
    replies = _claimed([owner], 4)
    Message.objects.filter(pk=replies[1].pk).update(
        status=Message.Status.FAILED, error_code="interrupted", content="reaped"
    )
    told: list[int] = []
    endings = _endings(replies)
    for given in endings:
        given.announce = lambda event: told.append(event["message"])

    ended = replies_finish(endings=endings)

    assert ended[1] is None and all(isinstance(m, Message) for i, m in enumerate(ended) if i != 1)
    assert Message.objects.get(pk=replies[1].pk).content == "reaped"
    assert sorted(told) == sorted(r.pk for i, r in enumerate(replies) if i != 1)


def test_one_replys_failing_ending_does_not_lose_the_others(owner, member, no_dispatch):
    replies = _claimed([owner, member], 5)
    endings = _endings(replies)
    endings[2].routing = {"unsaveable": object()}  # its values cannot be written

    ended = replies_finish(endings=endings)

    assert isinstance(ended[2], TypeError)
    assert all(isinstance(m, Message) for i, m in enumerate(ended) if i != 2)
    statuses = dict(
        Message.objects.filter(pk__in=[r.pk for r in replies]).values_list("pk", "status")
    )
    assert statuses[replies[2].pk] == Message.Status.STREAMING  # the reaper's to fail
    assert [statuses[r.pk] for i, r in enumerate(replies) if i != 2] == [
        e.status for i, e in enumerate(endings) if i != 2
    ]
    assert UsageLedger.objects.get(message=replies[2]).state == UsageLedger.State.RESERVED
    assert UsageLedger.objects.filter(state=UsageLedger.State.RESERVED).count() == 1
    _counters_agree_with_the_ledger()


def test_on_postgresql_a_text_the_database_refuses_fails_its_own_ending_only(owner, no_dispatch):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite keeps a NUL character in a text")
    replies = _claimed([owner], 3)
    endings = _endings(replies)
    endings[0].content = "a NUL \x00 character"

    ended = replies_finish(endings=endings)

    assert isinstance(ended[0], Exception)
    assert [m.status for m in ended[1:] if isinstance(m, Message)] == [
        endings[1].status,
        endings[2].status,
    ]
    _counters_agree_with_the_ledger()


def test_a_crash_between_the_endings_and_their_settlement_is_settled_by_the_reaper(
    owner, member, no_dispatch, monkeypatch
):
    replies = _claimed([owner, member], 6)

    def crashed(**kwargs):
        raise ConnectionError("the database went away")

    monkeypatch.setattr(ending_module, "quota_settle_messages", crashed)
    monkeypatch.setattr(ending_module, "quota_settle_message", crashed)
    ended = replies_finish(endings=_endings(replies))

    assert all(isinstance(m, Message) for m in ended)  # ended, and told
    assert UsageLedger.objects.filter(state=UsageLedger.State.RESERVED).count() == 6
    assert ledger_settle_stale() == 6
    assert not UsageLedger.objects.filter(state=UsageLedger.State.RESERVED).exists()
    _counters_agree_with_the_ledger()


async def test_replies_ending_together_on_one_loop_share_their_batches(
    owner, member, no_dispatch, monkeypatch
):
    replies = await sync_to_async(_claimed)([owner, member], 12)
    endings = await sync_to_async(_endings)(replies)
    batches: list[int] = []
    real = ending_module.replies_finish

    def counted(*, endings):
        batches.append(len(endings))
        return real(endings=endings)

    monkeypatch.setattr(ending_module, "replies_finish", counted)
    ended = await asyncio.gather(*(reply_end(given) for given in endings))

    assert [m.pk for m in ended if m is not None] == [r.pk for r in replies]
    assert batches[0] == 1  # the first ends at once, alone
    assert sum(batches) == 12 and len(batches) < 12
    rows = await sync_to_async(
        lambda: dict(
            Message.objects.filter(pk__in=[r.pk for r in replies]).values_list("pk", "status")
        )
    )()
    assert [rows[r.pk] for r in replies] == [e.status for e in endings]
    await sync_to_async(_counters_agree_with_the_ledger)()


def test_counters_gone_since_the_reservation_are_made_again_with_the_sum(
    owner, member, no_dispatch
):
    replies = _claimed([owner, member], 6)  # each sender in an organisation of their own
    UsageCounter.objects.all().delete()
    endings = _endings(replies)
    for given in endings:  # none released: a counter made again cannot go below 0 requests
        given.content = given.content or "partial"

    replies_finish(endings=endings)

    settled = list(UsageLedger.objects.filter(message__in=replies))
    assert {e.state for e in settled} == {UsageLedger.State.SETTLED}
    # Their user's and their organisation's, for the day and the month, of two senders.
    assert UsageCounter.objects.count() == 8
    for counter in UsageCounter.objects.all():
        mine = [
            e
            for e in settled
            if e.organisation_id == counter.organisation_id
            and (counter.user_id is None or e.user_id == counter.user_id)
        ]
        assert mine
        # Made again empty, then charged what settling changed: used minus reserved.
        assert counter.tokens == sum(e.used_tokens - e.reserved_tokens for e in mine)
        assert counter.cost == sum((e.cost - e.reserved_cost for e in mine), Decimal(0))
        assert counter.requests == 0  # counted when reserved
