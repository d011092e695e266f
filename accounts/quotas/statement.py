"""A reservation inside a caller's one statement (PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, models
from django.utils import timezone

from accounts.models import Period, UsageCounter, UsageLedger
from accounts.quotas.budgets import (
    MILLION,
    BudgetRule,
    QuotaExceeded,
    TokenPrices,
    _today,
    budgets_applying,
    period_reset,
    period_start,
)
from accounts.quotas.counters import _as_decimal

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
