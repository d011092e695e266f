"""What replies used, in chat's terms: one final reply settled against the budgets it reserved
(accounts/quotas/ keeps the ledger and knows nothing of messages), with what the reply was
copied onto its ledger row (every usage figure reads the ledger: accounts/usage.py).

Token counts and prices come from llm/accounting.py; a reply stores them on its row
(reply_finish), and these read them back.
"""

from __future__ import annotations

from collections.abc import Sequence

from accounts.models import UsageLedger
from accounts.quotas import ReplyOutcome, Settlement, quota_settle, quota_settle_many
from chat.models import Message


def reply_outcome(message: Message) -> ReplyOutcome:
    """What a reply was, as the ledger keeps it."""
    return ReplyOutcome(
        status=message.status,
        provider=message.provider,
        model=message.model,
        error_code=message.error_code,
        first_token_ms=message.first_token_ms,
        tokens_estimated=message.tokens_estimated,
    )


def reply_settlement(message: Message) -> Settlement:
    """What a final reply used, as its reservation is settled with."""
    return Settlement(
        message_id=message.pk,
        started=message.started_at is not None,
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
        content_chars=len(message.content),
        cost=message.cost,
        interrupted=message.error_code == "interrupted",
        outcome=reply_outcome(message),
    )


def quota_settle_message(*, message: Message) -> UsageLedger | None:
    """Settle a final reply's reservation with what it used (chat/replies/lifecycle.py)."""
    s = reply_settlement(message)
    return quota_settle(
        message_id=s.message_id,
        started=s.started,
        prompt_tokens=s.prompt_tokens,
        completion_tokens=s.completion_tokens,
        content_chars=s.content_chars,
        cost=s.cost,
        interrupted=s.interrupted,
        outcome=s.outcome,
    )


def quota_settle_messages(*, messages: Sequence[Message]) -> dict[int, UsageLedger]:
    """Settle many final replies' reservations in one transaction (replies ending together,
    chat/replies/ending.py); the ledger rows settled, by message id."""
    return quota_settle_many(settlements=[reply_settlement(m) for m in messages])


def ledger_settle_stale() -> int:
    """Settle reservations whose reply is final but that were never settled (the process died
    between finishing the reply and settling). Run by the reaper; returns how many."""
    stale = (
        UsageLedger.objects.filter(
            state=UsageLedger.State.RESERVED, message__status__in=Message.FINAL_STATUSES
        )
        .select_related("message")
        .order_by("pk")[:500]
    )
    settled = 0
    for entry in stale:
        assert entry.message is not None
        settled += quota_settle_message(message=entry.message) is not None
    return settled
