"""Token and cost budgets: reserve a reply's worst case before the provider call, settle what
it really used afterwards.

How a reservation stays atomic across processes and replicas:
- Every reply charges four UsageCounter rows — its user's and its organisation's counter for
  the current day and month — in the same transaction that writes its UsageLedger row.
- The reservation charges its worst case to those rows in one statement that locks them
  (SELECT … FOR UPDATE, in primary-key order so two reservations never deadlock) and returns
  the totals after the charge; it refuses if one would pass a budget, and the caller's
  transaction, rolled back, takes the charge back. Any concurrent reservation against the same
  budget waits for the lock and then charges the committed total (READ COMMITTED takes a fresh
  snapshot per statement). SQLite (embedded mode) has no row locks, but its IMMEDIATE
  transactions take the database write lock at BEGIN, which serialises the same way.
- Settling replaces the reserved worst case by the real usage (prompt + completion tokens,
  cost) on the ledger row and adds the difference (≤ 0 unless the prompt estimate was low) to
  the same counters, under the same locks.
So the charged total only passes a budget by what replies used beyond their reserved worst
case — at most the prompt-estimate error, never one extra max_tokens per parallel request.

The worst-case cost is the larger of tokens × QUOTA_COST_PER_TOKEN and the highest prices of
the deployments that may answer (`TokenPrices`, passed in by the caller: accounts knows nothing
of models), so a cost budget holds under concurrency whatever QUOTA_COST_PER_TOKEN says.

PostgreSQL is the record (ledger and counters); the cache (Redis in production) only holds
each organisation's budget rules, so most sends do not query them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Budget, Period, UsageCounter, UsageLedger
from core.cache import cached_forget, cached_read
from core.errors import ParleyError
from core.observability import metrics
from core.rows import row_insert

BUDGETS_CACHE_KEY = "quota:budgets:{organisation_id}"
BUDGETS_CACHE_SECONDS = 300
PERIOD_ADJECTIVE = {"day": "daily", "month": "monthly"}
MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class TokenPrices:
    """The most a reply may pay per million prompt and completion tokens (the highest prices
    among the deployments that may answer it)."""

    input_per_million: Decimal = Decimal(0)
    output_per_million: Decimal = Decimal(0)


@dataclass(frozen=True)
class BudgetRule:
    user_id: int | None
    period: str
    max_tokens: int | None
    max_cost: Decimal | None


class QuotaExceeded(ParleyError):
    """Over a budget: not retryable until the period resets (`resets_at`, `retry_after`)."""

    def __init__(self, *, rule: BudgetRule, resets_at: datetime, now: datetime) -> None:
        whose = "your" if rule.user_id is not None else "your organisation's"
        super().__init__(
            "quota_exceeded",
            f"This would pass {whose} {PERIOD_ADJECTIVE[rule.period]} budget. "
            f"It resets at {resets_at:%Y-%m-%d %H:%M} UTC.",
            extra={
                "resets_at": resets_at.isoformat(),
                "retry_after": max(1, math.ceil((resets_at - now).total_seconds())),
            },
        )
        self.rule = rule
        self.resets_at = resets_at
        metrics.REFUSALS.labels("quota_exceeded", rule.period).inc()


# --- periods -----------------------------------------------------------------------------


def period_start(period: str, day: date) -> date:
    return day if period == Period.DAY else day.replace(day=1)


def period_reset(period: str, day: date) -> datetime:
    """When the period holding `day` ends (UTC midnight)."""
    if period == Period.DAY:
        nxt = date.fromordinal(day.toordinal() + 1)
    else:
        nxt = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    return datetime.combine(nxt, time.min, tzinfo=UTC)


def _today(now: datetime) -> date:
    return now.astimezone(UTC).date()


# --- budget rules ------------------------------------------------------------------------


def budgets_for(*, organisation_id: int) -> list[BudgetRule]:
    """An organisation's budget rules, from the cache when it has them (and can be reached)."""
    return cached_read(
        BUDGETS_CACHE_KEY.format(organisation_id=organisation_id),
        lambda: [
            BudgetRule(b.user_id, b.period, b.max_tokens, b.max_cost)
            for b in Budget.objects.filter(organisation_id=organisation_id)
        ],
        timeout=BUDGETS_CACHE_SECONDS,
    )


def budgets_applying(
    *, user_id: int, organisation_id: int, cached: list[BudgetRule] | None = None
) -> list[BudgetRule]:
    """The budget rules a reservation of this user's is checked against (`cached`: the
    organisation's, as the cache held them a moment ago)."""
    rules = budgets_for(organisation_id=organisation_id) if cached is None else cached
    return [r for r in rules if r.user_id is None or r.user_id == user_id]


def budget_applies(*, user_id: int, organisation_id: int) -> bool:
    """Whether a reservation of this user's may be refused (quota_reserve): only a budget rule
    refuses one."""
    return bool(budgets_applying(user_id=user_id, organisation_id=organisation_id))


def budgets_forget(*, organisation_id: int) -> None:
    """Called when a budget is saved or deleted (accounts.signals)."""
    cached_forget(BUDGETS_CACHE_KEY.format(organisation_id=organisation_id))


# --- estimates ---------------------------------------------------------------------------


def tokens_estimate(chars: int) -> int:
    """A deliberately high token count for text: ~3 characters a token (English is ~4)."""
    return math.ceil(chars / 3)


def cost_of(tokens: int) -> Decimal:
    return Decimal(tokens) * settings.QUOTA_COST_PER_TOKEN


def cost_bound(*, prompt_tokens: int, max_tokens: int, prices: TokenPrices | None) -> Decimal:
    """The most a reply can cost: at QUOTA_COST_PER_TOKEN, or at the deployments' own prices
    if those come to more."""
    flat = cost_of(prompt_tokens + max_tokens)
    if prices is None:
        return flat
    priced = (
        Decimal(prompt_tokens) * prices.input_per_million
        + Decimal(max_tokens) * prices.output_per_million
    ) / MILLION
    return max(flat, priced)


# --- counters ----------------------------------------------------------------------------


def _counter_filter(*, organisation_id: int, user_id: int | None, day: date) -> Q:
    scopes = (
        Q(user_id=user_id) | Q(user__isnull=True) if user_id is not None else Q(user__isnull=True)
    )
    periods = Q(period=Period.DAY, start=day) | Q(
        period=Period.MONTH, start=period_start(Period.MONTH, day)
    )
    return Q(organisation_id=organisation_id) & scopes & periods


def _counters_create(*, organisation_id: int, user_id: int | None, day: date) -> None:
    """The (user, organisation) × (day, month) counters of `day` that are missing."""
    UsageCounter.objects.bulk_create(
        [
            UsageCounter(
                organisation_id=organisation_id,
                user_id=who,
                period=period,
                start=period_start(period, day),
            )
            # Always in this order, so concurrent first inserts cannot deadlock.
            for who in ([user_id, None] if user_id is not None else [None])
            for period in (Period.DAY, Period.MONTH)
        ],
        ignore_conflicts=True,
    )


# --- reserve, settle, release ------------------------------------------------------------


def _counters_charge_sql(*, excluding: int) -> str:
    """One statement that locks a reply's counters (in primary-key order, so two charges never
    deadlock), adds to them and returns what they hold now."""
    table = UsageCounter._meta.db_table
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    skip = f" AND id NOT IN ({', '.join(['%s'] * excluding)})" if excluding else ""
    return (
        f"UPDATE {table} SET tokens = tokens + %s, cost = cost + %s, requests = requests + %s "  # noqa: S608
        f"WHERE id IN (SELECT id FROM {table} WHERE organisation_id = %s "
        "AND (user_id = %s OR user_id IS NULL) "
        f"AND ((period = %s AND start = %s) OR (period = %s AND start = %s)){skip} "
        f"ORDER BY id{lock}) RETURNING id, user_id, period, tokens, cost"
    )


_COST_PLACES = Decimal(1).scaleb(-UsageCounter._meta.get_field("cost").decimal_places)  # type: ignore[arg-type]


def _as_decimal(value: object) -> Decimal:
    # PostgreSQL returns numeric as Decimal; SQLite (no decimal type) an int or a float.
    return value if isinstance(value, Decimal) else Decimal(str(value)).quantize(_COST_PLACES)


def _counters_charge(
    *,
    organisation_id: int,
    user_id: int | None,
    day: date,
    tokens: int,
    cost: Decimal,
    requests: int,
) -> dict[tuple[int | None, str], tuple[int, Decimal]]:
    """Add `tokens`, `cost` and `requests` to the (user, organisation) × (day, month) counters
    of `day` (created if missing): their (tokens, cost) after the charge, by (user, period).
    One statement when the counters exist (every reservation but a day's first, every
    settlement)."""
    wanted = 4 if user_id is not None else 2
    where = [
        organisation_id,
        user_id,
        Period.DAY,
        period_start(Period.DAY, day),
        Period.MONTH,
        period_start(Period.MONTH, day),
    ]
    charged: dict[tuple[int | None, str], tuple[int, Decimal]] = {}
    seen: list[int] = []
    with connection.cursor() as cursor:
        for attempt in range(2):
            cursor.execute(
                _counters_charge_sql(excluding=len(seen)), [tokens, cost, requests, *where, *seen]
            )
            for pk, who, period, total, spent in cursor.fetchall():
                seen.append(pk)
                charged[(who, period)] = (int(total), _as_decimal(spent))
            if len(charged) == wanted or attempt:
                break
            _counters_create(organisation_id=organisation_id, user_id=user_id, day=day)
    return charged


# --- reserve, settle, release ------------------------------------------------------------


def quota_reserve(
    *,
    user_id: int,
    organisation_id: int,
    prompt_tokens: int,
    max_tokens: int | None = None,
    prices: TokenPrices | None = None,
    now: datetime | None = None,
    ledger_saved: bool = True,
) -> UsageLedger:
    """Charge a reply's worst case (prompt + max_tokens, and their cost at `prices`) against
    every budget that applies, or raise QuotaExceeded and charge nothing. Returns the ledger
    row (state `reserved`); attach the reply to it with `reservation_attach` once the reply
    row exists. With `ledger_saved=False` the row is saved by `reservation_attach`, message
    and all, in one INSERT (a send's hot path): the caller must attach it in the same
    transaction.

    The counters are charged first and checked after, in one statement that holds their locks
    until the commit: a refusal raises, and the caller's transaction, rolled back, takes the
    charge back with it (nothing may be saved then anyway)."""
    now = now or timezone.now()
    day = _today(now)
    completion = settings.LLM_MAX_TOKENS if max_tokens is None else max_tokens
    worst_tokens = prompt_tokens + completion
    worst_cost = cost_bound(prompt_tokens=prompt_tokens, max_tokens=completion, prices=prices)
    rules = budgets_applying(user_id=user_id, organisation_id=organisation_id)
    entry = UsageLedger(
        organisation_id=organisation_id,
        user_id=user_id,
        reserved_prompt_tokens=prompt_tokens,
        reserved_tokens=worst_tokens,
        reserved_cost=worst_cost,
        created_at=now,
    )
    # No savepoint: a refusal aborts the caller's transaction anyway (nothing may be saved).
    with transaction.atomic(savepoint=False):
        counters = _counters_charge(
            organisation_id=organisation_id,
            user_id=user_id,
            day=day,
            tokens=worst_tokens,
            cost=worst_cost,
            requests=1,
        )
        for rule in rules:
            tokens, cost = counters[(rule.user_id, rule.period)]
            before = (cost - worst_cost).quantize(_COST_PLACES)  # the charge is stored rounded
            over_tokens = rule.max_tokens is not None and tokens > rule.max_tokens
            over_cost = rule.max_cost is not None and (
                before >= rule.max_cost or cost > rule.max_cost
            )
            if over_tokens or over_cost:
                raise QuotaExceeded(rule=rule, resets_at=period_reset(rule.period, day), now=now)
        if ledger_saved:
            row_insert(entry)
        return entry


def reservation_attach(*, reservation: UsageLedger, message_id: int) -> None:
    """Attach the reply to its reservation's ledger row; a row reserved with
    `ledger_saved=False` is written now, in one hand-written INSERT (core/rows.py: the ORM's
    cost more CPU than the database spends on it)."""
    if reservation.pk is None:
        reservation.message_id = message_id
        row_insert(reservation)
        return
    UsageLedger.objects.filter(pk=reservation.pk).update(message_id=message_id)


# --- a reservation inside a caller's one statement (PostgreSQL) ---------------------------
#
# A send on PostgreSQL is one data-modifying statement, run outside a transaction (one round
# trip, no BEGIN or COMMIT: chat/services/send_statement.py). Its reservation is quota_reserve's,
# in SQL: the counters locked in primary-key order, then checked against the budget rules,
# and only if every rule lets it through are the caller's rows written, the ledger row with
# them and the counters charged. A refusal writes nothing, so nothing needs taking back; the
# locks last as long as the statement. The check reads the locked rows (READ COMMITTED: the
# committed totals, however long it waited for them), so admission stays strict under
# concurrency exactly as the one UPDATE of `_counters_charge` keeps it.


class CountersMissing(Exception):
    """A reservation in one statement found its period's counters not all there (the first
    send of a day or month): nothing was written; create them (`counters_create`) and run the
    statement again."""


@dataclass(frozen=True)
class StatementReservation:
    """The budget's part of a caller's one statement. Its CTEs, in this order around the
    caller's: `head` (after a CTE `estimate` with one row and one column `prompt`, the
    prompt's tokens), then the caller's writes, each gated on `go` (true when the reservation
    may go ahead), then `tail` (after the caller's CTE `reply_cte`, whose `id` the ledger row
    takes), then `columns` in the statement's final SELECT, read by `reservation_read`."""

    head: str
    head_params: list[Any]
    tail: str
    tail_params: list[Any]
    go: str
    columns: str
    rules: list[BudgetRule]
    wanted: int
    entry: UsageLedger
    now: datetime


_COMPUTED = ("message", "reserved_prompt_tokens", "reserved_tokens", "reserved_cost")


_ReservationSQL = tuple[str, str, str, list["models.Field[Any, Any]"]]


def _statement_reservation_sql(reply_cte: str) -> _ReservationSQL:
    """The head, tail and columns of a statement reservation (made per reply CTE name), and
    the ledger's fields whose values are parameters, in their placeholders' order."""
    quote = connection.ops.quote_name
    counters, ledger = quote(UsageCounter._meta.db_table), quote(UsageLedger._meta.db_table)
    cost_type = "numeric({}, {})".format(  # the counters' own: stored as the check sees it
        UsageCounter._meta.get_field("cost").max_digits,  # type: ignore[union-attr]
        UsageCounter._meta.get_field("cost").decimal_places,  # type: ignore[union-attr]
    )
    # cost_bound in SQL: the larger of tokens at the flat rate and the deployments' prices.
    head = (
        f"q_worst AS (SELECT prompt, prompt + %s AS tokens, CAST(GREATEST((prompt + %s) * %s, "  # noqa: S608
        f"prompt * %s + %s) AS {cost_type}) AS cost FROM estimate), "
        f"q_locked AS (SELECT id, user_id, period, tokens, cost FROM {counters} "
        "WHERE organisation_id = %s AND (user_id = %s OR user_id IS NULL) "
        "AND ((period = %s AND start = %s) OR (period = %s AND start = %s)) "
        "ORDER BY id FOR UPDATE), "
        "q_rules AS (SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[], "
        "%s::numeric[]) WITH ORDINALITY AS r(user_id, period, max_tokens, max_cost, n)), "
        # quota_reserve's check: the total after the charge, and cost already at the budget.
        "q_refused AS (SELECT min(r.n) AS n FROM q_rules r JOIN q_locked c "
        "ON c.period = r.period AND c.user_id IS NOT DISTINCT FROM r.user_id CROSS JOIN q_worst w "
        "WHERE c.tokens + w.tokens > r.max_tokens OR c.cost >= r.max_cost "
        "OR c.cost + w.cost > r.max_cost), "
        "q_go AS (SELECT (SELECT count(*) FROM q_locked) = %s "
        "AND (SELECT n FROM q_refused) IS NULL AS go)"
    )
    meta = UsageLedger._meta
    fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field]
    computed = {
        "message": f"{reply_cte}.id",
        "reserved_prompt_tokens": "w.prompt",
        "reserved_tokens": "w.tokens",
        "reserved_cost": "w.cost",
    }
    columns = ", ".join(quote(f.column) for f in fields)
    values = ", ".join(computed.get(f.name, "%s") for f in fields)
    tail = (
        f"q_ledger AS (INSERT INTO {ledger} ({columns}) SELECT {values} "  # noqa: S608
        f"FROM {reply_cte} CROSS JOIN q_worst w RETURNING id), "
        f"q_charged AS (UPDATE {counters} SET tokens = {counters}.tokens + w.tokens, "
        f"cost = {counters}.cost + w.cost, requests = {counters}.requests + 1 FROM q_worst w "
        f"WHERE {counters}.id IN (SELECT id FROM q_locked) AND EXISTS (SELECT 1 FROM q_ledger) "
        "RETURNING 1)"
    )
    selected = (
        "(SELECT id FROM q_ledger), (SELECT prompt FROM q_worst), (SELECT tokens FROM q_worst), "
        "(SELECT cost FROM q_worst), (SELECT count(*) FROM q_locked), (SELECT n FROM q_refused)"
    )
    return head, tail, selected, [f for f in fields if f.name not in _COMPUTED]


_RESERVATION_SQL: dict[str, _ReservationSQL] = {}


def statement_reservation(
    *,
    user_id: int,
    organisation_id: int,
    reply_cte: str,
    max_tokens: int | None = None,
    prices: TokenPrices | None = None,
    cached_rules: list[BudgetRule] | None = None,
) -> StatementReservation:
    """A reservation of a reply's worst case as quota_reserve makes it (the same charge, the
    same check), for a caller's one statement on PostgreSQL; the prompt estimate is the
    caller's (its CTE `estimate`), since it reads the caller's rows in the same snapshot."""
    now = timezone.now()
    day = _today(now)
    completion = settings.LLM_MAX_TOKENS if max_tokens is None else max_tokens
    prices = prices or TokenPrices()
    rules = budgets_applying(user_id=user_id, organisation_id=organisation_id, cached=cached_rules)
    found = _RESERVATION_SQL.get(reply_cte)
    if found is None:
        found = _RESERVATION_SQL[reply_cte] = _statement_reservation_sql(reply_cte)
    head, tail, columns, fields = found
    wanted = 4  # the user's and the organisation's, for the day and the month
    head_params: list[Any] = [
        completion,
        completion,
        settings.QUOTA_COST_PER_TOKEN,
        prices.input_per_million / MILLION,
        completion * prices.output_per_million / MILLION,
        organisation_id,
        user_id,
        Period.DAY,
        period_start(Period.DAY, day),
        Period.MONTH,
        period_start(Period.MONTH, day),
        [r.user_id for r in rules],
        [r.period for r in rules],
        [r.max_tokens for r in rules],
        [r.max_cost for r in rules],
        wanted,
    ]
    entry = UsageLedger(organisation_id=organisation_id, user_id=user_id, created_at=now)
    tail_params = [f.get_db_prep_save(f.pre_save(entry, True), connection) for f in fields]
    return StatementReservation(
        head=head,
        head_params=head_params,
        tail=tail,
        tail_params=tail_params,
        go="(SELECT go FROM q_go)",
        columns=columns,
        rules=rules,
        wanted=wanted,
        entry=entry,
        now=now,
    )


def reservation_read(
    reservation: StatementReservation, values: tuple[Any, ...], *, message_id: int | None
) -> UsageLedger | None:
    """What the statement did with the reservation (its `columns`, in order): its ledger row,
    saved with the reply `message_id`; None if the caller's writes did not happen for a reason
    of their own (nothing was charged then). Raises QuotaExceeded (refused: nothing written)
    or CountersMissing (nothing written)."""
    ledger_id, prompt, tokens, cost, locked, refused = values
    if refused is not None:
        rule = reservation.rules[refused - 1]
        day = _today(reservation.now)
        raise QuotaExceeded(
            rule=rule, resets_at=period_reset(rule.period, day), now=reservation.now
        )
    if locked < reservation.wanted:
        raise CountersMissing
    if ledger_id is None:
        return None
    entry = reservation.entry
    entry.pk, entry.message_id = ledger_id, message_id
    entry.reserved_prompt_tokens, entry.reserved_tokens = int(prompt), int(tokens)
    entry.reserved_cost = _as_decimal(cost)
    entry._state.adding, entry._state.db = False, connection.alias
    return entry


def counters_create(*, user_id: int, organisation_id: int, now: datetime) -> None:
    """The counters of `now`'s day and month that a statement reservation found missing."""
    _counters_create(organisation_id=organisation_id, user_id=user_id, day=_today(now))


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


# --- many replies settled together ---------------------------------------------------------
#
# Replies that end together (500 of them within a second or two at the end of a load's
# streams) each settled in a transaction of their own: three statements and a commit each, and
# every reply of one organisation locking its counter rows in turn. Settled together, they
# are one transaction: their ledger rows locked in one statement (in primary-key order), written
# in one, and each counter charged once with the sum of its replies' differences, all the
# counters locked in primary-key order in one statement, as quota_reserve locks them, so no
# two of these, nor a reservation, can deadlock.


def quota_settle_many(*, settlements: Sequence[Settlement]) -> dict[int, UsageLedger]:
    """Settle many finished replies' reservations in one transaction, each as quota_settle
    settles it alone; the ledger rows settled, by message id (a reply whose reservation is
    settled already, or that has none, is left out: each is settled once)."""
    if not settlements:
        return {}
    by_message = {s.message_id: s for s in settlements}
    now = timezone.now()
    lazy = connection.vendor == "postgresql" and not connection.in_atomic_block
    settled: dict[int, UsageLedger] = {}
    changes: dict[_CounterKey, list[Any]] = {}
    # Inside a caller's transaction, a savepoint: a failure here leaves the caller's to go on.
    with transaction.atomic():
        for entry in _ledger_locked_many(list(by_message), lazy_commit=lazy):
            assert entry.message_id is not None
            settlement = by_message[entry.message_id]
            requests, _ = _entry_settled(
                entry,
                settlement.used(entry),
                settlement.charged(entry),
                now,
                settlement.outcome or ReplyOutcome(),
            )
            settled[entry.message_id] = entry
            tokens, spent = (
                entry.used_tokens - entry.reserved_tokens,
                entry.cost - entry.reserved_cost,
            )
            if tokens or spent or requests:
                _changes_add(changes, entry, tokens, spent, requests)
        _ledger_update_many(list(settled.values()), _SETTLED_FIELDS + _OUTCOME_FIELDS)
        _counters_charge_many(changes)
    return settled


_CounterKey = tuple[int, int | None, str, date]  # organisation, user (None: all), period, start


def _changes_add(
    changes: dict[_CounterKey, list[Any]],
    entry: UsageLedger,
    tokens: int,
    cost: Decimal,
    requests: int,
) -> None:
    """Add one reply's difference to each of its counters' sums: its user's and its
    organisation's, for the day and the month it was reserved in."""
    day = _today(entry.created_at)
    whom = [entry.user_id, None] if entry.user_id is not None else [None]
    for who in whom:
        for period in (Period.DAY.value, Period.MONTH.value):
            # Plain strings in the key: a Choices member hashes by its name, not its value.
            key = (entry.organisation_id, who, period, period_start(period, day))
            change = changes.setdefault(key, [0, Decimal(0), 0])
            change[0] += tokens
            change[1] += cost
            change[2] += requests


def _ledger_locked_many(message_ids: list[int], *, lazy_commit: bool) -> list[UsageLedger]:
    """The `reserved` ledger rows of these replies, locked in primary-key order until the
    transaction ends (and, on PostgreSQL with `lazy_commit`, its commit not waiting for the
    disk, as _ledger_locked does)."""
    meta, quote = UsageLedger._meta, connection.ops.quote_name
    table = quote(meta.db_table)
    columns = ", ".join(f"{table}.{quote(f.column)}" for f in meta.concrete_fields)
    key, state = quote(_ledger_field("message").column), quote(_ledger_field("state").column)
    pk = quote(_ledger_field("id").column)
    params: list[Any]
    if connection.vendor == "postgresql":
        lazy = ", (SELECT set_config('synchronous_commit', 'off', true)) AS lazy"
        sql = (
            f"SELECT {columns} FROM {table}{lazy if lazy_commit else ''} "  # noqa: S608
            f"WHERE {key} = ANY(%s) AND {state} = %s ORDER BY {table}.{pk} FOR UPDATE OF {table}"
        )
        params = [message_ids, UsageLedger.State.RESERVED]
    else:  # SQLite: its write lock, taken at BEGIN, serialises instead
        among = ", ".join(["%s"] * len(message_ids))
        sql = (
            f"SELECT {columns} FROM {table} WHERE {key} IN ({among}) "  # noqa: S608
            f"AND {state} = %s ORDER BY {pk}"
        )
        params = [*message_ids, UsageLedger.State.RESERVED]
    return list(UsageLedger.objects.raw(sql, params))


def _ledger_update_many(entries: list[UsageLedger], names: list[str]) -> None:
    """Write `names` of many locked ledger rows: on PostgreSQL one UPDATE over arrays, each
    value prepared by its field; elsewhere _ledger_update's statement, run for each."""
    if not entries:
        return
    quote = connection.ops.quote_name
    fields = [_ledger_field(name) for name in names]
    table, pk = quote(UsageLedger._meta.db_table), quote(_ledger_field("id").column)
    rows = [
        [f.get_db_prep_save(getattr(entry, f.attname), connection) for f in fields] + [entry.pk]
        for entry in entries
    ]
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
            sql = f"UPDATE {table} SET {assignments} WHERE {pk} = %s"  # noqa: S608
            cursor.executemany(sql, rows)
            return
        types = [*(f.db_type(connection) for f in fields), "bigint"]
        arrays = ", ".join(f"%s::{_array_type(t)}[]" for t in types)
        names_v = [f"v{i}" for i in range(len(fields))]
        assignments = ", ".join(
            f"{quote(f.column)} = v.{n}" for f, n in zip(fields, names_v, strict=True)
        )
        sql = (
            f"UPDATE {table} SET {assignments} FROM unnest({arrays}) "  # noqa: S608
            f"AS v({', '.join(names_v)}, id) WHERE {table}.{pk} = v.id"
        )
        cursor.execute(sql, [list(column) for column in zip(*rows, strict=True)])


def _array_type(db_type: str | None) -> str:
    """A column's type as an array's element type (a varchar as text: its length is the
    column's to check)."""
    assert db_type is not None
    return "text" if db_type.startswith("varchar") else db_type


def _counters_charge_many(changes: dict[_CounterKey, list[Any]]) -> None:
    """Add each counter's sum to it, all the counters locked in primary-key order in one
    statement on PostgreSQL (each on its own elsewhere); a counter missing (settled on a day
    whose counters are gone, which a reservation creates) is created first."""
    pending = {key: change for key, change in changes.items() if any(change)}
    for attempt in range(2):
        if not pending:
            return
        found = _counters_add(pending)
        missing = {key: change for key, change in pending.items() if key not in found}
        if missing and not attempt:
            UsageCounter.objects.bulk_create(
                [
                    UsageCounter(organisation_id=o, user_id=u, period=p, start=start)
                    # Always in one order, so concurrent first inserts cannot deadlock.
                    for o, u, p, start in sorted(missing, key=_creation_order)
                ],
                ignore_conflicts=True,
            )
        pending = missing


def _creation_order(key: _CounterKey) -> tuple[int, bool, int, str, date]:
    organisation_id, user_id, period, start = key
    return organisation_id, user_id is None, user_id or 0, period, start


def _counters_add(changes: dict[_CounterKey, list[Any]]) -> set[_CounterKey]:
    """Add to the counters there are; the keys of those found."""
    table = connection.ops.quote_name(UsageCounter._meta.db_table)
    keys = list(changes)
    found: set[_CounterKey] = set()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            sql = (
                "WITH d AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], "  # noqa: S608
                "%s::date[], %s::bigint[], %s::numeric[], %s::integer[]) "
                "AS d(organisation_id, user_id, period, start, tokens, cost, requests)), "
                f"locked AS (SELECT c.id, d.tokens, d.cost, d.requests FROM {table} c JOIN d "
                "ON c.organisation_id = d.organisation_id AND c.period = d.period "
                "AND c.start = d.start AND (c.user_id = d.user_id "
                "OR (c.user_id IS NULL AND d.user_id IS NULL)) ORDER BY c.id FOR UPDATE OF c) "
                f"UPDATE {table} SET tokens = {table}.tokens + l.tokens, "
                f"cost = {table}.cost + l.cost, requests = {table}.requests + l.requests "
                f"FROM locked l WHERE {table}.id = l.id "
                f"RETURNING {table}.organisation_id, {table}.user_id, {table}.period, "
                f"{table}.start"
            )
            columns = list(zip(*keys, strict=True)) + list(zip(*changes.values(), strict=True))
            cursor.execute(sql, [list(column) for column in columns])
            found.update((o, u, p, s) for o, u, p, s in cursor.fetchall())
            return found
        sql = (
            f"UPDATE {table} SET tokens = tokens + %s, cost = cost + %s, "  # noqa: S608
            "requests = requests + %s WHERE organisation_id = %s AND user_id IS %s "
            "AND period = %s AND start = %s"
        )
        for key in keys:
            tokens, cost, requests = changes[key]
            organisation_id, user_id, period, start = key
            cursor.execute(sql, [tokens, cost, requests, organisation_id, user_id, period, start])
            if cursor.rowcount:
                found.add(key)
    return found
