"""A reservation settled with what its reply used, or released."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from accounts.models import UsageLedger
from accounts.quotas.budgets import _today, cost_of, tokens_estimate
from accounts.quotas.counters import _counters_charge


@dataclass(frozen=True)
class ReplyOutcome:
    """What a settled reply was, in plain data (accounts knows nothing of messages): copied
    onto its ledger row, which outlives the message."""

    status: str = ""
    provider: str = ""
    model: str = ""
    error_code: str = ""
    first_token_ms: int | None = None
    tokens_estimated: bool = False


Usage = tuple[int, int]  # (prompt tokens, completion tokens) charged


def _usage_split(entry: UsageLedger, used_tokens: int) -> Usage:
    """A total without its split: the reserved prompt estimate, the rest completion."""
    prompt = min(entry.reserved_prompt_tokens, used_tokens)
    return prompt, used_tokens - prompt


def _ledger_field(name: str) -> models.Field[Any, Any]:
    field = UsageLedger._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field


def _ledger_locked(*, column: str, value: int, lazy_commit: bool = False) -> UsageLedger | None:
    """The `reserved` ledger row whose `column` (id or message_id, both unique) is `value`,
    locked until the transaction ends; None if there is none. `lazy_commit` (PostgreSQL): the
    transaction's commit does not wait for its WAL to reach the disk (`_finalise` says when),
    set by the same statement (SET LOCAL as a function call), so at no extra round trip.

    Hand-written: the ORM built this query afresh for every reply settled (its filter, and an
    ORDER BY from Meta.ordering that a unique key does not need), ~5 % of a worker's CPU
    (docs/benchmarks.md "The worker's CPU per send"). Identifiers come from the model's
    metadata; values are parameters."""
    meta, quote = UsageLedger._meta, connection.ops.quote_name
    table = quote(meta.db_table)
    columns = ", ".join(f"{table}.{quote(f.column)}" for f in meta.concrete_fields)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    key, state = quote(_ledger_field(column).column), quote(_ledger_field("state").column)
    where = f"{key} = %s AND {state} = %s"
    sql = f"SELECT {columns} FROM {table} WHERE {where}{lock}"  # noqa: S608
    if lazy_commit:
        lazy = "(SELECT set_config('synchronous_commit', 'off', true)) AS lazy"
        sql = f"SELECT {columns} FROM {table}, {lazy} WHERE {where}{lock} OF {table}"  # noqa: S608
    rows = UsageLedger.objects.raw(sql, [value, UsageLedger.State.RESERVED])
    return next(iter(rows), None)


def _ledger_update(entry: UsageLedger, names: list[str]) -> None:
    """Write `names` of a locked ledger row: one UPDATE by primary key, each value prepared by
    its field as save() prepares it (what save(update_fields=...) sends, without building it)."""
    quote = connection.ops.quote_name
    fields = [_ledger_field(name) for name in names]
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    values = [f.get_db_prep_save(getattr(entry, f.attname), connection) for f in fields]
    table, pk = quote(UsageLedger._meta.db_table), quote(_ledger_field("id").column)
    sql = f"UPDATE {table} SET {assignments} WHERE {pk} = %s"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, entry.pk])


_SETTLED_FIELDS = [
    "state",
    "used_tokens",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "settled_at",
]
_OUTCOME_FIELDS = [
    "outcome",
    "provider",
    "model",
    "error_code",
    "first_token_ms",
    "tokens_estimated",
]


def _entry_settled(
    entry: UsageLedger,
    split: Usage | None,
    cost: Decimal | None,
    now: datetime | None,
    outcome: ReplyOutcome | None,
) -> tuple[int, list[str]]:
    """Set a locked ledger row to what was used (`split` None: released); the requests to
    add to its counters (-1 for a release) and the fields changed."""
    if split is None:
        entry.state = UsageLedger.State.RELEASED
        entry.prompt_tokens, entry.completion_tokens = 0, 0
        entry.used_tokens, entry.cost = 0, Decimal(0)
        requests = -1
    else:
        entry.state = UsageLedger.State.SETTLED
        entry.prompt_tokens, entry.completion_tokens = split
        entry.used_tokens = sum(split)
        entry.cost = cost if cost is not None else cost_of(entry.used_tokens)
        requests = 0
    entry.settled_at = now or timezone.now()
    if outcome is None:
        return requests, list(_SETTLED_FIELDS)
    entry.outcome = outcome.status
    entry.provider = outcome.provider[:64]
    entry.model = outcome.model[:128]
    entry.error_code = outcome.error_code[:64]
    entry.first_token_ms = outcome.first_token_ms
    entry.tokens_estimated = outcome.tokens_estimated
    return requests, _SETTLED_FIELDS + _OUTCOME_FIELDS


def _finalise(
    *,
    column: str,
    value: int,
    usage: Callable[[UsageLedger], Usage | None],
    cost: Decimal | Callable[[UsageLedger], Decimal | None] | None,
    now: datetime | None,
    outcome: ReplyOutcome | None = None,
) -> UsageLedger | None:
    """Replace a reservation by real usage (None: release it). Once only: a ledger row that is
    not `reserved` any more is left alone. `usage` and `cost` are worked out from the locked
    row (what it reserved), so that settling reads the row once.

    A reply's settlement (by message, in a transaction of its own, on PostgreSQL) commits
    without waiting for the disk: every commit that waits queues behind the others' flushes
    on this machine's ~3.6 ms fsync, the sends' among them (docs/benchmarks.md "The send's
    budget in its one statement"). It is visible at once; only a PostgreSQL crash in the next
    fraction of a second could lose it, and then the ledger row is `reserved` with its reply
    final, which the reaper settles again (ledger_settle_stale), as after a worker's crash.
    Rows without a reply (ledger_settle) have no such sweep and wait for the disk."""
    lazy = (
        column == "message" and connection.vendor == "postgresql" and not connection.in_atomic_block
    )
    with transaction.atomic(savepoint=False):
        entry = _ledger_locked(column=column, value=value, lazy_commit=lazy)
        if entry is None:
            return None
        split = usage(entry)
        if callable(cost):
            cost = cost(entry)
        requests, changed = _entry_settled(entry, split, cost, now, outcome)
        _ledger_update(entry, changed)
        tokens, spent = entry.used_tokens - entry.reserved_tokens, entry.cost - entry.reserved_cost
        if tokens or spent or requests:
            # One statement, counters locked in pk order as quota_reserve locks them; the ledger
            # row is locked first here, but no reservation ever locks an existing ledger row.
            _counters_charge(
                organisation_id=entry.organisation_id,
                user_id=entry.user_id,
                day=_today(entry.created_at),
                tokens=tokens,
                cost=spent,
                requests=requests,
            )
        return entry


def ledger_settle(
    *, entry_id: int, used_tokens: int | None, cost: Decimal | None = None
) -> UsageLedger | None:
    """Settle one ledger entry with known usage (None releases it); for callers that reserved
    without a chat message (e.g. a future REST endpoint, or a test)."""
    return _finalise(
        column="id",
        value=entry_id,
        usage=lambda entry: None if used_tokens is None else _usage_split(entry, used_tokens),
        cost=cost,
        now=None,
    )


def quota_release(*, message_id: int) -> UsageLedger | None:
    """A reply that never reached a provider (cancelled or reaped while pending): give its
    reservation back."""
    return _finalise(
        column="message", value=message_id, usage=lambda entry: None, cost=None, now=None
    )


@dataclass(frozen=True)
class Settlement:
    """What a finished reply used, to settle its reservation with (quota_settle's arguments)."""

    message_id: int
    started: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    content_chars: int
    cost: Decimal | None = None
    interrupted: bool = False
    outcome: ReplyOutcome | None = None

    def used(self, entry: UsageLedger) -> Usage | None:
        """The tokens to charge against what `entry` reserved; None releases it."""
        if not self.started:
            return None
        if self.interrupted:
            return _usage_split(entry, entry.reserved_tokens)
        if self.prompt_tokens is not None or self.completion_tokens is not None:
            prompt = (
                self.prompt_tokens
                if self.prompt_tokens is not None
                else entry.reserved_prompt_tokens
            )
            return prompt, self.completion_tokens or 0
        if self.content_chars:
            return entry.reserved_prompt_tokens, tokens_estimate(self.content_chars)
        return None

    def charged(self, entry: UsageLedger) -> Decimal | None:
        """The cost to charge (None: the flat rate of the tokens used)."""
        if self.interrupted and self.started:
            return max(self.cost or Decimal(0), entry.reserved_cost)
        return self.cost


def quota_settle(
    *,
    message_id: int,
    started: bool,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    content_chars: int,
    cost: Decimal | None = None,
    interrupted: bool = False,
    outcome: ReplyOutcome | None = None,
) -> UsageLedger | None:
    """Settle a finished reply's reservation with what it used.

    - Usage reported (or estimated by llm/): prompt + completion; an unknown prompt count is
      taken as the reserved estimate.
    - Never started: released.
    - Interrupted (the generator died; the provider may have billed all of it): the reserved
      worst case stays charged, tokens and cost.
    - Failed with no usage: the estimated text, if any, else released.
    `outcome` (what the reply was) is copied onto the ledger row.
    """
    settlement = Settlement(
        message_id=message_id,
        started=started,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        content_chars=content_chars,
        cost=cost,
        interrupted=interrupted,
        outcome=outcome,
    )
    return _finalise(
        column="message",
        value=message_id,
        usage=settlement.used,
        cost=settlement.charged,
        now=None,
        outcome=outcome,
    )
